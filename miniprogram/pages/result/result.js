// After paying: ask the server until WeChat's notification has made the order `paid`.
// wx.requestPayment's success alone proves nothing, and the page says so while it waits.
const errors = require('../../utils/errors')
const format = require('../../utils/format')
const pay = require('../../utils/pay')

Page({
  data: {
    state: 'waiting', // waiting | paid | pending | closed | refunded | error
    errorMessage: '',
    attempts: 0,
    order: null
  },

  onLoad (query) {
    this.outTradeNo = query.out_trade_no || ''
    this.watch()
  },

  onUnload () {
    this.left = true // stop asking once the page is gone
  },

  async watch () {
    if (!this.outTradeNo) {
      this.setData({ state: 'error', errorMessage: '缺少订单号' })
      return
    }
    this.setData({ state: 'waiting', errorMessage: '', attempts: 0 })
    try {
      const order = await pay.waitUntilSettled(this.outTradeNo, {
        stopped: () => this.left,
        onAttempt: (o, n) => this.setData({ attempts: n, order: format.order(o) })
      })
      if (this.left) return
      this.setData({ order: format.order(order), state: stateFor(order.status) })
    } catch (err) {
      if (!this.left) this.setData({ state: 'error', errorMessage: errors.userMessage(err) })
    }
  },

  refresh () {
    this.watch()
  },

  viewOrders () {
    wx.switchTab({ url: '/pages/orders/orders' })
  },

  viewOrder () {
    wx.redirectTo({ url: '/pages/order-detail/order-detail?out_trade_no=' + encodeURIComponent(this.outTradeNo) })
  },

  shop () {
    wx.switchTab({ url: '/pages/products/products' })
  }
})

function stateFor (status) {
  if (status === 'paid') return 'paid'
  if (status === 'closed') return 'closed'
  if (status === 'refunding' || status === 'refunded') return 'refunded'
  return 'pending' // still unpaid after every attempt
}
