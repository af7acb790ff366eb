// One order as the server has it; an unpaid one can be paid from here or checked with WeChat.
const { request } = require('../../utils/request')
const errors = require('../../utils/errors')
const format = require('../../utils/format')
const privacy = require('../../utils/privacy')

Page({
  data: {
    state: 'loading', // loading | ready | error
    errorMessage: '',
    order: null,
    syncing: false
  },

  onLoad (query) {
    this.outTradeNo = query.out_trade_no || ''
    this.load()
  },

  // Back from paying (checkout -> result -> back): show the order as it now stands.
  onShow () {
    if (this.shownOnce) this.load()
    this.shownOnce = true
  },

  onPullDownRefresh () {
    this.load().then(() => wx.stopPullDownRefresh())
  },

  async load () {
    if (!this.outTradeNo) {
      this.setData({ state: 'error', errorMessage: '缺少订单号' })
      return
    }
    this.setData({ state: this.data.order ? 'ready' : 'loading', errorMessage: '' })
    try {
      const order = await request({ path: '/api/orders/' + encodeURIComponent(this.outTradeNo), toast: false })
      this.setData({ state: 'ready', order: format.order(order) })
    } catch (err) {
      this.setData({ state: 'error', errorMessage: errors.userMessage(err) })
    }
  },

  retry () {
    this.load()
  },

  // Asks the server to query WeChat for this order (a notification may be late or lost).
  async sync () {
    if (this.data.syncing) return
    this.setData({ syncing: true })
    try {
      const order = await request({ path: '/api/orders/' + encodeURIComponent(this.outTradeNo) + '/sync', method: 'POST' })
      this.setData({ order: format.order(order) })
    } catch (err) {
      // the request helper has shown the toast
    }
    this.setData({ syncing: false })
  },

  pay () {
    wx.navigateTo({ url: '/pages/checkout/checkout?out_trade_no=' + encodeURIComponent(this.outTradeNo) })
  },

  // WeChat confirms a copy with its own toast; a refusal (privacy guide not declared or not agreed) says why.
  copyNo () {
    wx.setClipboardData({
      data: this.outTradeNo,
      fail: (res) => wx.showToast({ title: privacy.refusalMessage('复制', res), icon: 'none', duration: 3000 })
    })
  }
})
