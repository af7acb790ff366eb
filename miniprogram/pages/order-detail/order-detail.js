// One order as the server has it; an unpaid one can be paid from here or checked with WeChat, a shipped one shows
// its parcels and lets the buyer confirm receipt in WeChat's own confirmation (wx.openBusinessView).
const config = require('../../utils/config')
const { request } = require('../../utils/request')
const errors = require('../../utils/errors')
const format = require('../../utils/format')
const privacy = require('../../utils/privacy')
const receipt = require('../../utils/receipt')

// WeChat confirms a copy with its own toast; a refusal (privacy guide not declared or not agreed) says why.
function copy (data) {
  wx.setClipboardData({
    data,
    fail: (res) => wx.showToast({ title: privacy.refusalMessage('复制', res), icon: 'none', duration: 3000 })
  })
}

Page({
  data: {
    state: 'loading', // loading | ready | error
    errorMessage: '',
    order: null,
    syncing: false,
    confirming: false, // WeChat's confirmation is open, or we wait for the server to say completed
    confirmMessage: ''
  },

  onLoad (query) {
    // Our own links say out_trade_no; WeChat's order centre and shipping messages (set_msg_jump_path)
    // open this page with merchant_trade_no (and transaction_id, merchant_id) appended instead.
    this.outTradeNo = query.out_trade_no || query.merchant_trade_no || ''
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

  copyNo () {
    copy(this.outTradeNo)
  },

  copyTracking (e) {
    copy(String(e.currentTarget.dataset.no || ''))
  },

  onUnload () {
    this.left = true
  },

  // WeChat's confirmation page tells the buyer's choice back (utils/receipt.js); only the server, told by WeChat's
  // settlement push, says the order is completed, so the page then asks it, a bounded number of times.
  async confirmReceipt () {
    const extraData = this.data.order && this.data.order.confirmReceipt
    if (!extraData || this.data.confirming) return
    this.setData({ confirming: true, confirmMessage: '' })
    let choice
    try {
      choice = await receipt.confirmInWeChat(extraData)
    } catch (err) {
      this.setData({ confirming: false, confirmMessage: err.message })
      return
    }
    if (choice.status === 'cancel') {
      this.setData({ confirming: false, confirmMessage: '您没有确认收货；收到商品后可以再点“确认收货”' })
      return
    }
    if (choice.status === 'fail') {
      this.setData({ confirming: false, confirmMessage: '确认收货未完成' + (choice.errormsg ? '：' + choice.errormsg : '') + '，请稍后重试' })
      return
    }
    const path = '/api/orders/' + encodeURIComponent(this.outTradeNo)
    for (let n = 1; n <= config.receiptPollAttempts && !this.left; n++) {
      try {
        const order = await request({ path, toast: false })
        this.setData({ order: format.order(order) })
        if (order.status === 'completed') {
          this.setData({ confirming: false })
          wx.showToast({ title: '已确认收货', icon: 'success' })
          return
        }
      } catch (err) {
        // a failed question is asked again on the next round
      }
      if (n < config.receiptPollAttempts) await new Promise((resolve) => setTimeout(resolve, config.pollIntervalMs))
    }
    if (!this.left) {
      this.setData({ confirming: false, confirmMessage: '微信已收到您的确认收货，订单状态稍后更新，请下拉刷新查看' })
    }
  }
})
