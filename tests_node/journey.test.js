// The shopper's journey through the real pages against a live sandbox backend:
// launch, log in, pick a product, pay, wait for WeChat's notification, see `paid` on the result page and in the orders list.
'use strict'
const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { startBackend } = require('./harness/backend')
const { launch } = require('./harness/miniprogram')

let backend
before(async () => { backend = await startBackend() })
after(async () => { if (backend) await backend.stop() })

async function pickAndCheckout (mp, name, times = 1) {
  const products = await mp.waitForRoute('pages/products/products', 'ready')
  const index = products.data.products.findIndex((p) => p.name.includes(name))
  assert.ok(index >= 0, name + ' is on the products page')
  for (let i = 0; i < times; i++) products.tap({ text: '＋', dataset: { index } })
  assert.match(products.text(), new RegExp('已选 ' + times + ' 件'))
  products.tap('去结算')
  return mp.waitForRoute('pages/checkout/checkout', 'ready')
}

test('launch, log in, pick, pay through the sandbox, wait, see paid on the result page and in the orders list', async () => {
  assert.equal(backend.health.sandbox, true)
  const mp = await launch({ baseUrl: backend.url, wx: { user: 'journey-alice' } })
  try {
    await mp.app.ready
    assert.equal(mp.wx.logins, 1, 'one wx.login at launch')
    const token = mp.wx.storage.get('miniapp.token')
    assert.ok(token, 'the token is kept in storage')
    assert.equal((await backend.api('POST', '/api/auth/check', { token })).status, 200, 'the server knows the stored token')

    const products = await mp.waitForRoute('pages/products/products', 'ready')
    assert.match(products.text(), /拿铁咖啡 Latte ¥18\.00/)
    assert.throws(() => products.tap('去结算'), /disabled/, 'nothing picked: checkout is disabled')

    const checkout = await pickAndCheckout(mp, 'Latte', 2)
    assert.match(checkout.text(), /拿铁咖啡 Latte ¥18\.00 × 2 ¥36\.00/)
    assert.match(checkout.text(), /合计 ¥36\.00/)

    checkout.tap('微信支付')
    assert.equal(mp.page.data.state, 'paying')
    assert.throws(() => mp.page.tap('支付中'), /disabled/, 'no second tap while paying')

    // The result page: at first it waits for WeChat's confirmation and says so.
    await mp.waitForRoute('pages/result/result', 'paid')
    const first = mp.opened.find((o) => o.route === 'pages/result/result')
    assert.match(first.text, /正在等待微信支付确认/)
    assert.match(first.text, /以微信服务器发给我们的通知为准/)
    const paidText = mp.page.text()
    assert.match(paidText, /支付成功/)
    assert.match(paidText, /¥36\.00/)
    assert.match(paidText, /已支付/)
    assert.deepEqual(mp.routes(), ['pages/products/products', 'pages/result/result'], 'checkout was replaced by the result')

    // What went over the wire: product ids and quantities only; paid through the sandbox's control call.
    const [create] = mp.wx.calls('POST', '/api/orders')
    assert.deepEqual(create.body, { items: [{ product_id: 1, quantity: 2 }] })
    const no = mp.page.data.order.outTradeNo
    assert.equal(mp.wx.calls('POST', '/api/orders/' + no + '/pay').length, 1)
    const [sandboxPay] = mp.wx.calls('POST', '/sandbox/control/pay')
    assert.ok(sandboxPay.body.paySign && sandboxPay.body.package.startsWith('prepay_id='))
    assert.equal(sandboxPay.status, 200)
    assert.ok(mp.wx.calls('GET', '/api/orders/' + no).length >= 1, 'the page asked the server for the status')
    assert.equal(mp.wx.payments.length, 0, 'sandbox mode does not call wx.requestPayment')

    // The server agrees, and the notification is what made it paid.
    const order = await backend.api('GET', '/api/orders/' + no, { token: mp.wx.storage.get('miniapp.token') })
    assert.equal(order.data.status, 'paid')
    assert.equal(order.data.total_fee, 3600)
    assert.equal(mp.page.data.order.transactionId, order.data.transaction_id)
    const notes = await backend.api('GET', '/sandbox/control/notifications?out_trade_no=' + no)
    assert.ok(notes.data.items.some((n) => n.acknowledged), 'WeChat\'s notification was acknowledged')

    // The orders tab lists it as paid.
    mp.tapTab('我的订单')
    const orders = await mp.waitForRoute('pages/orders/orders', 'ready')
    assert.equal(orders.data.orders[0].outTradeNo, no)
    assert.match(orders.text(), /拿铁咖啡 Latte 已支付/)

    // And its detail page shows the transaction, with nothing left to pay.
    orders.tap({ dataset: { no } })
    const detail = await mp.waitForRoute('pages/order-detail/order-detail', 'ready')
    assert.match(detail.text(), new RegExp('微信支付单号 ' + order.data.transaction_id))
    assert.ok(!detail.text().includes('去支付'))
  } finally {
    await mp.close()
  }
})

test('wx.requestPayment path: the phone pays, the page still waits for the server to say paid', async () => {
  // payMode 'wechat' is what a production backend gets; here "WeChat" behind the phone is the sandbox.
  const mp = await launch({ baseUrl: backend.url, config: { payMode: 'wechat' }, wx: { user: 'journey-bob' } })
  try {
    const checkout = await pickAndCheckout(mp, 'Croissant', 1)
    checkout.tap('微信支付')
    await mp.waitForRoute('pages/result/result', 'paid')
    assert.equal(mp.wx.payments.length, 1, 'wx.requestPayment was called once')
    const params = mp.wx.payments[0]
    assert.deepEqual(Object.keys(params).sort(), ['nonceStr', 'package', 'paySign', 'signType', 'timeStamp'])
    assert.equal(mp.wx.calls('POST', '/sandbox/control/pay').length, 0, 'the page itself did not use the sandbox')
    assert.match(mp.page.text(), /支付成功 .*¥12\.00/)
  } finally {
    await mp.close()
  }
})

test('an unpaid order is paid later from its detail page', async () => {
  const mp = await launch({ baseUrl: backend.url, wx: { user: 'journey-carol', payment: 'cancel' }, config: { payMode: 'wechat' } })
  try {
    const checkout = await pickAndCheckout(mp, 'Americano', 3)
    checkout.tap('微信支付')
    const failed = await mp.waitForRoute('pages/checkout/checkout', 'failed')
    const no = failed.data.outTradeNo
    assert.ok(no)
    failed.tap('查看订单')
    const detail = await mp.waitForRoute('pages/order-detail/order-detail', 'ready')
    assert.match(detail.text(), /待支付 ¥45\.00/)

    mp.wx.payment = 'sandbox' // this time the user confirms on the phone
    detail.tap('去支付')
    const again = await mp.waitForRoute('pages/checkout/checkout', 'ready')
    assert.match(again.text(), /合计 ¥45\.00/)
    again.tap('微信支付')
    await mp.waitForRoute('pages/result/result', 'paid')
    assert.equal(mp.page.data.order.outTradeNo, no, 'the same order, not a new one')
    assert.equal(mp.wx.calls('POST', '/api/orders').length, 1)

    // Back to the detail page: it shows the order as it now stands.
    mp.page.tap('订单详情')
    const paid = await mp.waitFor((p) => p.route === 'pages/order-detail/order-detail' && p.data.order && p.data.order.status === 'paid')
    assert.match(paid.text(), /已支付/)
  } finally {
    await mp.close()
  }
})

test('the orders list pages through the user\'s own orders and shows an empty state for a new user', async () => {
  const mp = await launch({ baseUrl: backend.url, config: { pageSize: 2 }, wx: { user: 'journey-dave' } })
  try {
    await mp.app.ready
    mp.tapTab('我的订单')
    const empty = await mp.waitForRoute('pages/orders/orders', 'empty')
    assert.match(empty.text(), /还没有订单/)

    const token = mp.wx.storage.get('miniapp.token')
    const made = []
    for (let i = 0; i < 3; i++) {
      const res = await backend.api('POST', '/api/orders', { token, body: { items: [{ product_id: 4, quantity: 1 + i }] } })
      assert.equal(res.status, 201)
      made.unshift(res.data.out_trade_no)
    }
    empty.instance.onPullDownRefresh()
    const list = await mp.waitFor((p) => p.data.state === 'ready' && p.data.orders.length === 2)
    assert.equal(list.data.hasMore, true)
    assert.match(list.text(), /加载更多/)
    list.tap('加载更多')
    const all = await mp.waitFor((p) => p.data.orders.length === 3 && !p.data.loadingMore)
    assert.deepEqual(all.data.orders.map((o) => o.outTradeNo), made, 'newest first, no duplicates')
    assert.match(all.text(), /没有更多订单了/)
    assert.ok(!all.text().includes('Latte'), 'only this user\'s orders')
  } finally {
    await mp.close()
  }
})
