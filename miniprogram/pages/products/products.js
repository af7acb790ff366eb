// The catalogue: pick quantities, then go to checkout with product ids and quantities only.
const { request } = require('../../utils/request')
const errors = require('../../utils/errors')
const format = require('../../utils/format')

const MAX_QUANTITY = 99

Page({
  data: {
    state: 'loading', // loading | ready | empty | error
    errorMessage: '',
    products: [],
    count: 0,
    totalText: '¥0.00'
  },

  onLoad () {
    this.load()
  },

  onPullDownRefresh () {
    this.load().then(() => wx.stopPullDownRefresh())
  },

  async load () {
    this.setData({ state: 'loading', errorMessage: '' })
    try {
      const body = await request({ path: '/api/products', auth: false, toast: false })
      const previous = {}
      for (const p of this.data.products) previous[p.id] = p.quantity
      const products = (body.items || []).map((p) => ({
        id: p.id,
        name: p.name,
        priceFen: p.price_fen,
        priceText: format.yuan(p.price_fen),
        quantity: previous[p.id] || 0
      }))
      this.setData({ products, state: products.length ? 'ready' : 'empty' })
      this.updateTotal()
    } catch (err) {
      this.setData({ state: 'error', errorMessage: errors.userMessage(err) })
    }
  },

  retry () {
    this.load()
  },

  increase (e) {
    this.change(e.currentTarget.dataset.index, 1)
  },

  decrease (e) {
    this.change(e.currentTarget.dataset.index, -1)
  },

  change (index, delta) {
    const product = this.data.products[index]
    if (!product) return
    const quantity = Math.min(MAX_QUANTITY, Math.max(0, product.quantity + delta))
    this.setData({ ['products[' + index + '].quantity']: quantity })
    this.updateTotal()
  },

  // Shown as a guide only: the order's amount is computed by the server at checkout.
  updateTotal () {
    let count = 0
    let fen = 0
    for (const p of this.data.products) {
      count += p.quantity
      fen += p.quantity * p.priceFen
    }
    this.setData({ count, totalText: format.yuan(fen) })
  },

  checkout () {
    const items = this.data.products
      .filter((p) => p.quantity > 0)
      .map((p) => ({ product_id: p.id, quantity: p.quantity }))
    if (!items.length) {
      wx.showToast({ title: '请先选择商品', icon: 'none' })
      return
    }
    wx.navigateTo({ url: '/pages/checkout/checkout?items=' + encodeURIComponent(format.encodeCart(items)) })
  }
})
