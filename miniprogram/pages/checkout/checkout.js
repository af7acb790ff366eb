// Create the order (product ids and quantities; the server prices it), get the pay parameters, pay.
// Reached with ?items=id:qty,... from the catalogue, or ?out_trade_no=... to pay an existing unpaid order.
const { request } = require('../../utils/request')
const errors = require('../../utils/errors')
const format = require('../../utils/format')
const pay = require('../../utils/pay')
const subscriptions = require('../../utils/subscriptions')

// Errors after which this order cannot be paid: the next tap makes a new one.
const ORDER_GONE = ['order_closed', 'order_expired', 'trade_type_conflict']

Page({
  data: {
    state: 'loading', // loading | error | ready | paying | failed
    errorMessage: '',
    payError: '',
    lines: [],
    totalText: '',
    priced: false, // true once the amount is the server's order total
    outTradeNo: ''
  },

  onLoad (query) {
    this.cart = format.decodeCart(query.items ? decodeURIComponent(query.items) : '')
    this.setData({ outTradeNo: query.out_trade_no || '' })
    this.load()
    subscriptions.prepare() // the templates to ask for at the pay tap
  },

  async load () {
    this.setData({ state: 'loading', errorMessage: '' })
    try {
      if (this.data.outTradeNo) {
        const order = await request({ path: '/api/orders/' + encodeURIComponent(this.data.outTradeNo), toast: false })
        if (order.status !== 'unpaid') {
          wx.redirectTo({ url: '/pages/result/result?out_trade_no=' + encodeURIComponent(order.out_trade_no) })
          return
        }
        this.showOrder(order)
        this.setData({ state: 'ready' })
        return
      }
      if (!this.cart.length) {
        this.setData({ state: 'error', errorMessage: '没有选择商品，请返回选购' })
        return
      }
      const body = await request({ path: '/api/products', auth: false, toast: false })
      const byId = {}
      for (const p of body.items || []) byId[p.id] = p
      if (this.cart.some((i) => !byId[i.product_id])) {
        this.setData({ state: 'error', errorMessage: errors.messageFor(400, 'unknown_product') })
        return
      }
      let fen = 0
      const lines = this.cart.map((i) => {
        const p = byId[i.product_id]
        fen += p.price_fen * i.quantity
        return { productId: p.id, name: p.name, quantity: i.quantity, unitText: format.yuan(p.price_fen), subtotalText: format.yuan(p.price_fen * i.quantity) }
      })
      this.setData({ state: 'ready', lines, totalText: format.yuan(fen), priced: false })
    } catch (err) {
      this.setData({ state: 'error', errorMessage: errors.userMessage(err) })
    }
  },

  showOrder (order) {
    const view = format.order(order)
    this.setData({ outTradeNo: view.outTradeNo, lines: view.lines, totalText: view.totalText, priced: true })
  },

  retry () {
    this.load()
  },

  back () {
    wx.navigateBack({ fail: () => wx.switchTab({ url: '/pages/products/products' }) })
  },

  // The tap: the subscribe dialog opens now (WeChat allows it only here), the order is made meanwhile, and the
  // payment sheet follows once the dialog has closed; whatever the person chose there, the payment goes on.
  pay () {
    if (this.data.state === 'paying') return // a second tap while paying
    const asked = subscriptions.ask()
    this.setData({ state: 'paying', payError: '' })
    return this.payAfter(asked)
  },

  async payAfter (asked) {
    try {
      if (!this.data.outTradeNo) {
        const order = await request({ path: '/api/orders', method: 'POST', data: { items: this.cart }, toast: false })
        this.showOrder(order)
      }
      await pay.payOrder(this.data.outTradeNo, { before: asked })
      // Handed to WeChat; the result page waits for WeChat's notification to reach the server.
      wx.redirectTo({ url: '/pages/result/result?out_trade_no=' + encodeURIComponent(this.data.outTradeNo) })
    } catch (err) {
      if (err.code === 'order_paid') {
        wx.redirectTo({ url: '/pages/result/result?out_trade_no=' + encodeURIComponent(this.data.outTradeNo) })
        return
      }
      if (ORDER_GONE.indexOf(err.code) >= 0 && this.cart.length) this.setData({ outTradeNo: '', priced: false })
      this.setData({ state: 'failed', payError: errors.userMessage(err) })
    }
  },

  viewOrder () {
    if (!this.data.outTradeNo) return
    wx.navigateTo({ url: '/pages/order-detail/order-detail?out_trade_no=' + encodeURIComponent(this.data.outTradeNo) })
  }
})
