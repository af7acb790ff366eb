// After paying: the shop ships (an operator's `flask orders ship`, which uploads the shipping information to the
// sandbox's order-shipping management), the buyer sees the parcel on the order page, copies its tracking number and
// confirms receipt in WeChat's own confirmation page (wx.openBusinessView; the shim's buyer confirms through the
// sandbox, which pushes WeChat's signed settlement event to the backend), and the page waits for `completed`.
'use strict'
const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { startBackend } = require('./harness/backend')
const { launch } = require('./harness/miniprogram')

let backend
before(async () => { backend = await startBackend() })
after(async () => { if (backend) await backend.stop() })

const tick = () => new Promise((resolve) => setImmediate(resolve))

// A paid order of `user`'s, paid as the phone would (behind the pages, which journey.test.js covers).
async function paidOrder (mp) {
  await mp.app.ready
  const token = mp.wx.storage.get('miniapp.token')
  const order = await backend.api('POST', '/api/orders', { token, body: { items: [{ product_id: 1, quantity: 1 }] } })
  assert.equal(order.status, 201)
  const no = order.data.out_trade_no
  const params = await backend.api('POST', '/api/orders/' + no + '/pay', { token })
  assert.equal((await backend.api('POST', '/sandbox/control/pay', { body: params.data })).status, 200)
  for (let i = 0; i < 200; i++) {
    const now = await backend.api('GET', '/api/orders/' + no, { token })
    if (now.data.status === 'paid') return now.data
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  throw new Error(no + ' never became paid')
}

async function ship (no, ...how) {
  const res = await backend.flask(['orders', 'ship', no, ...how, '--json'])
  assert.equal(res.code, 0, 'flask orders ship: ' + res.stdout + res.stderr)
  return res
}

async function serverOrder (mp, no) {
  return (await backend.api('GET', '/api/orders/' + no, { token: mp.wx.storage.get('miniapp.token') })).data
}

async function openDetail (mp, no, status) {
  mp.router.navigateTo({ url: '/pages/order-detail/order-detail?out_trade_no=' + no })
  return mp.waitFor((p) => p.route === 'pages/order-detail/order-detail' && p.data.state === 'ready' && p.data.order.status === status,
    { what: 'the order page showing ' + status })
}

test('pay -> shipped (flask orders ship) -> the buyer copies the tracking number and confirms receipt -> completed', async () => {
  const mp = await launch({ baseUrl: backend.url, wx: { user: 'receipt-alice' } })
  try {
    const products = await mp.waitForRoute('pages/products/products', 'ready')
    products.tap({ text: '＋', dataset: { index: 0 } })
    products.tap('去结算')
    const checkout = await mp.waitForRoute('pages/checkout/checkout', 'ready')
    checkout.tap('微信支付')
    const result = await mp.waitForRoute('pages/result/result', 'paid')
    const no = result.data.order.outTradeNo
    const paid = await serverOrder(mp, no)
    assert.equal(paid.status, 'paid')
    result.tap('订单详情')
    const unshipped = await mp.waitForRoute('pages/order-detail/order-detail', 'ready')
    assert.ok(!unshipped.tappables().some((t) => t.text.includes('确认收货')), 'nothing to confirm before shipping')
    assert.ok(!unshipped.text().includes('物流信息'))

    await ship(no, '--express', 'ZTO', '--tracking', 'ZT7500012345678')
    const shipped = await serverOrder(mp, no)
    assert.equal(shipped.status, 'shipped')
    assert.ok(shipped.confirm_receipt, 'the order says how to confirm receipt')

    // The orders list names the new state.
    mp.tapTab('我的订单')
    const orders = await mp.waitFor((p) => p.route === 'pages/orders/orders' && p.data.state === 'ready' &&
      p.data.orders.some((o) => o.outTradeNo === no && o.status === 'shipped'))
    assert.match(orders.text(), /拿铁咖啡 Latte 已发货/)

    orders.tap({ dataset: { no } })
    const detail = await mp.waitFor((p) => p.route === 'pages/order-detail/order-detail' && p.data.state === 'ready')
    assert.match(detail.text(), /物流信息 快递公司 中通快递 运单号 ZT7500012345678 复制/)
    assert.match(detail.text(), /发货时间 \d{4}-\d\d-\d\d \d\d:\d\d/)

    detail.tap({ text: '复制', dataset: { no: 'ZT7500012345678' } })
    await tick()
    assert.equal(mp.wx.clipboard, 'ZT7500012345678')

    detail.tap('确认收货')
    assert.equal(detail.data.confirming, true)
    assert.throws(() => mp.page.tap('正在确认收货'), /disabled/, 'no second tap while confirming')
    const done = await mp.waitFor((p) => p.route === 'pages/order-detail/order-detail' && p.data.order.status === 'completed' && !p.data.confirming,
      { what: 'completed' })
    assert.match(done.text(), /已完成/)
    assert.match(done.text(), /收货时间 \d{4}-\d\d-\d\d \d\d:\d\d/)
    assert.ok(!done.tappables().some((t) => t.text.includes('确认收货')), 'nothing left to confirm')
    assert.deepEqual(mp.wx.toasts, ['已确认收货'])

    // WeChat's page was opened with the order's merchant ids, and the buyer's confirmation reached the server.
    assert.equal(mp.wx.businessViews.length, 1)
    const view = mp.wx.businessViews[0]
    assert.equal(view.businessType, 'weappOrderConfirm')
    assert.equal(view.extraData.merchant_trade_no, no)
    assert.equal(view.extraData.transaction_id, paid.transaction_id)
    if (shipped.confirm_receipt.merchant_id) assert.equal(view.extraData.merchant_id, shipped.confirm_receipt.merchant_id)
    assert.deepEqual(mp.wx.receipts.map((r) => r.status), [200])
    const completed = await serverOrder(mp, no)
    assert.equal(completed.status, 'completed')
    assert.ok(completed.received_at)

    mp.tapTab('我的订单')
    const listed = await mp.waitFor((p) => p.route === 'pages/orders/orders' && p.data.orders.some((o) => o.outTradeNo === no && o.status === 'completed'))
    assert.match(listed.text(), /拿铁咖啡 Latte 已完成/)
  } finally {
    await mp.close()
  }
})

test('the buyer backs out of WeChat\'s confirmation: the order stays shipped and the button stays', async () => {
  const mp = await launch({ baseUrl: backend.url, wx: { user: 'receipt-bob', receipt: 'cancel' } })
  try {
    const { out_trade_no: no } = await paidOrder(mp)
    await ship(no, '--virtual')
    const detail = await openDetail(mp, no, 'shipped')
    assert.match(detail.text(), /配送方式 虚拟商品，无需物流/)
    detail.tap('确认收货')
    const back = await mp.waitFor((p) => !p.data.confirming && p.data.confirmMessage, { what: 'the cancel message' })
    assert.match(back.text(), /您没有确认收货；收到商品后可以再点“确认收货” 确认收货/)
    assert.equal(mp.wx.receipts.length, 0)
    assert.equal((await serverOrder(mp, no)).status, 'shipped')
  } finally {
    await mp.close()
  }
})

test('WeChat says confirmed but the server has not heard yet: bounded polling, then a message that says so', async () => {
  const mp = await launch({ baseUrl: backend.url, config: { receiptPollAttempts: 3 }, wx: { user: 'receipt-carol' } })
  // WeChat's page answers success, but its settlement push has not reached the backend.
  mp.wx.receipt = async () => ({ status: 'success' })
  try {
    const { out_trade_no: no } = await paidOrder(mp)
    await ship(no, '--express', 'SF', '--tracking', 'SF1400012345678', '--receiver-phone', '13912345678')
    const detail = await openDetail(mp, no, 'shipped')
    assert.match(detail.text(), /快递公司 顺丰速运 运单号 SF1400012345678/)
    const asked = mp.wx.calls('GET', '/api/orders/' + no).length
    detail.tap('确认收货')
    const waited = await mp.waitFor((p) => !p.data.confirming && p.data.confirmMessage, { what: 'the slow message' })
    assert.match(waited.text(), /微信已收到您的确认收货，订单状态稍后更新，请下拉刷新查看/)
    // Three questions after the confirmation (and one more from the page showing again on the way back).
    assert.equal(mp.wx.calls('GET', '/api/orders/' + no).length - asked, 4)
    assert.equal((await serverOrder(mp, no)).status, 'shipped')
  } finally {
    await mp.close()
  }
})

test('WeChat\'s page fails (e.g. another payer): the page says so with WeChat\'s reason, and the button stays', async () => {
  const mp = await launch({ baseUrl: backend.url, wx: { user: 'receipt-dave', receipt: async () => ({ status: 'fail', errormsg: '获取用户订单失败' }) } })
  try {
    const { out_trade_no: no } = await paidOrder(mp)
    await ship(no, '--pickup')
    const detail = await openDetail(mp, no, 'shipped')
    assert.match(detail.text(), /配送方式 到店自提/)
    detail.tap('确认收货')
    const failed = await mp.waitFor((p) => !p.data.confirming && p.data.confirmMessage, { what: 'the fail message' })
    assert.match(failed.text(), /确认收货未完成：获取用户订单失败，请稍后重试 确认收货/)
    assert.equal((await serverOrder(mp, no)).status, 'shipped')
  } finally {
    await mp.close()
  }
})

test('WeChat\'s order centre opens the page with merchant_trade_no (set_msg_jump_path\'s query): the order shows', async () => {
  const mp = await launch({ baseUrl: backend.url, wx: { user: 'receipt-erin' } })
  try {
    const paid = await paidOrder(mp)
    const no = paid.out_trade_no
    await ship(no, '--virtual')
    mp.router.navigateTo({ url: '/pages/order-detail/order-detail?transaction_id=' + paid.transaction_id +
      '&merchant_id=' + paid.confirm_receipt.merchant_id + '&merchant_trade_no=' + no })
    const detail = await mp.waitFor((p) => p.route === 'pages/order-detail/order-detail' && p.data.state === 'ready',
      { what: 'the order page opened from WeChat' })
    assert.equal(detail.data.order.status, 'shipped')
    assert.ok(detail.tappables().some((t) => t.text.includes('确认收货')))
  } finally {
    await mp.close()
  }
})
