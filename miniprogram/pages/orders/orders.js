// The user's own orders, newest first, a page at a time; and the optional phone-number binding.
const config = require('../../utils/config')
const { request } = require('../../utils/request')
const session = require('../../utils/session')
const errors = require('../../utils/errors')
const format = require('../../utils/format')
const privacy = require('../../utils/privacy')

Page({
  data: {
    state: 'loading', // loading | ready | empty | error
    errorMessage: '',
    orders: [],
    page: 0,
    hasMore: false,
    loadingMore: false,
    moreError: '',
    phone: 'hidden', // hidden | offer | binding | bound | unavailable
    phoneMessage: ''
  },

  // A tab page stays alive: fetch again every time it is shown, so a new order appears.
  onShow () {
    this.refresh()
  },

  onPullDownRefresh () {
    this.refresh().then(() => wx.stopPullDownRefresh())
  },

  onReachBottom () {
    if (this.data.hasMore && !this.data.loadingMore) this.loadMore()
  },

  async refresh () {
    if (!this.data.orders.length) this.setData({ state: 'loading', errorMessage: '' })
    try {
      const body = await this.fetch(1)
      const orders = body.items.map(format.order)
      this.setData({ orders, page: 1, hasMore: !!body.has_more, moreError: '', state: orders.length ? 'ready' : 'empty' })
      this.offerPhone()
    } catch (err) {
      this.setData({ state: 'error', errorMessage: errors.userMessage(err), orders: [] })
    }
  },

  async loadMore () {
    this.setData({ loadingMore: true, moreError: '' })
    try {
      const body = await this.fetch(this.data.page + 1)
      const known = {}
      for (const o of this.data.orders) known[o.outTradeNo] = true
      // An order made meanwhile shifts the pages by one: skip what is already shown.
      const fresh = body.items.map(format.order).filter((o) => !known[o.outTradeNo])
      this.setData({ orders: this.data.orders.concat(fresh), page: body.page, hasMore: !!body.has_more, loadingMore: false })
    } catch (err) {
      this.setData({ loadingMore: false, moreError: errors.userMessage(err) })
    }
  },

  fetch (page) {
    return request({ path: '/api/orders?page=' + page + '&per_page=' + config.pageSize, toast: false })
  },

  retry () {
    this.refresh()
  },

  open (e) {
    wx.navigateTo({ url: '/pages/order-detail/order-detail?out_trade_no=' + encodeURIComponent(e.currentTarget.dataset.no) })
  },

  shop () {
    wx.switchTab({ url: '/pages/products/products' })
  },

  // The phone number is only given through a button the user taps (open-type="getPhoneNumber"),
  // so the page explains why it asks and lets the user skip it.
  offerPhone () {
    if (['unavailable', 'binding', 'bound'].indexOf(this.data.phone) >= 0) return
    const user = session.user()
    this.setData({ phone: user && !user.has_phone ? 'offer' : 'hidden' })
  },

  async onGetPhoneNumber (e) {
    const detail = e.detail || {}
    const code = detail.code
    if (!code) {
      if (detail.errno) {
        // WeChat refused before asking: the privacy guide, or the phone-number quota the shop pays for.
        this.setData({ phoneMessage: privacy.refusalMessage('获取手机号', detail) })
        return
      }
      // The user said no (getPhoneNumber:fail user deny) or the account cannot share one.
      wx.showToast({ title: '未授权手机号，可以稍后再绑定', icon: 'none' })
      return
    }
    this.setData({ phone: 'binding', phoneMessage: '' })
    try {
      const body = await request({ path: '/api/user/phone', method: 'POST', data: { code }, toast: false })
      const user = Object.assign({}, session.user(), (body && body.user) || {}, { has_phone: true })
      session.setUser(user)
      getApp().globalData.user = user
      this.setData({ phone: 'bound', phoneMessage: '已绑定手机号 ' + ((body && body.phone) || '') })
      wx.showToast({ title: '手机号已绑定', icon: 'success' })
    } catch (err) {
      if (err.status === 404) {
        // The server does not offer phone binding (yet): say so once instead of failing on every tap.
        this.setData({ phone: 'unavailable', phoneMessage: '手机号绑定暂未开放' })
      } else {
        this.setData({ phone: 'offer', phoneMessage: errors.userMessage(err) })
      }
    }
  }
})
