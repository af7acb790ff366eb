// Subscribe messages' consent at the pay tap: the checkout page asks wx.requestSubscribeMessage for the templates
// the server lists (GET /api/user/subscriptions), within the tap, reports the choice (POST /api/user/subscriptions),
// and pays whatever the answer: accept (the sandbox grants WeChat's credits, the server sends the paid message),
// reject, a per-template 'ban', subscriptions switched off (errCode 20004), or a failing dialog.
'use strict'
const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { startBackend } = require('./harness/backend')
const { launch } = require('./harness/miniprogram')

let backend
before(async () => { backend = await startBackend() })
after(async () => { if (backend) await backend.stop() })

// Products -> checkout -> tap pay -> the result page says paid. Answers the order number.
async function buy (mp) {
  const products = await mp.waitForRoute('pages/products/products', 'ready')
  products.tap({ text: '＋', dataset: { index: 1 } })
  products.tap('去结算')
  const checkout = await mp.waitForRoute('pages/checkout/checkout', 'ready')
  await mp.wx.idle() // the page has fetched the templates to ask for before the person taps
  checkout.tap('微信支付')
  const result = await mp.waitForRoute('pages/result/result', 'paid')
  return result.data.order.outTradeNo
}

async function serverSide (mp, no) {
  const token = mp.wx.storage.get('miniapp.token')
  const subs = (await backend.api('GET', '/api/user/subscriptions', { token })).data
  const order = (await backend.api('GET', '/api/orders/' + no, { token })).data
  const messages = (await backend.api('GET', '/sandbox/control/messages?out_trade_no=' + no)).data.items
  return { subs, order, messages }
}

function choices (subs) {
  return Object.fromEntries(subs.items.map((i) => [i.event, [i.last_choice, i.credits]]))
}

async function theOneAsk (mp) {
  const { template_ids: ids } = (await backend.api('GET', '/api/user/subscriptions', { token: mp.wx.storage.get('miniapp.token') })).data
  assert.ok(ids.length >= 1 && ids.length <= 3, 'the sandbox configures its templates')
  assert.equal(mp.wx.subscribeRequests.length, 1, 'asked once')
  assert.deepEqual(mp.wx.subscribeRequests[0], { tmplIds: ids, gesture: true }, 'for the configured templates, within the tap')
  return ids
}

test('accept: WeChat grants the credits, the server records them, and the payment sends its paid message', async () => {
  const mp = await launch({ baseUrl: backend.url, wx: { user: 'subs-accept', subscribe: 'accept' } })
  try {
    const no = await buy(mp)
    const ids = await theOneAsk(mp)
    assert.deepEqual(mp.wx.grants.map((g) => [g.body.template_ids, g.status]), [[ids, 200]])
    const [report] = mp.wx.calls('POST', '/api/user/subscriptions')
    assert.deepEqual(report.body, { accepted: ids })
    assert.equal(report.status, 200)
    // The report reached the server before the payment was made, so the paid message went out.
    assert.ok(mp.wx.calls('POST', '/sandbox/control/pay')[0] && mp.wx.requests.indexOf(report) < mp.wx.requests.indexOf(mp.wx.calls('POST', '/sandbox/control/pay')[0]))
    const { subs, order, messages } = await serverSide(mp, no)
    assert.equal(order.status, 'paid')
    const paid = subs.items.find((i) => i.event === 'paid')
    assert.deepEqual([paid.last_choice, paid.credits], ['accept', 0], 'the paid message spent its credit')
    for (const i of subs.items.filter((x) => x.template_id !== paid.template_id)) assert.deepEqual([i.last_choice, i.credits], ['accept', 1], i.event)
    const sent = messages.filter((m) => m.template_id === paid.template_id)
    assert.equal(sent.length, 1, 'one paid message')
    assert.equal(sent[0].delivered, true)
    assert.match(sent[0].page, new RegExp('pages/order-detail/order-detail\\?out_trade_no=' + no))
  } finally {
    await mp.close()
  }
})

test('reject: reported as rejected, no credit, no message, and the payment went through', async () => {
  const mp = await launch({ baseUrl: backend.url, wx: { user: 'subs-reject', subscribe: 'reject' } })
  try {
    const no = await buy(mp)
    const ids = await theOneAsk(mp)
    assert.deepEqual(mp.wx.calls('POST', '/api/user/subscriptions').map((r) => r.body), [{ rejected: ids }])
    assert.equal(mp.wx.grants.length, 0)
    const { subs, order, messages } = await serverSide(mp, no)
    assert.equal(order.status, 'paid')
    for (const [event, state] of Object.entries(choices(subs))) assert.deepEqual(state, ['reject', 0], event)
    assert.deepEqual(messages, [])
  } finally {
    await mp.close()
  }
})

test('ban: a template turned off answers "ban", reported as rejected; paid all the same', async () => {
  const mp = await launch({ baseUrl: backend.url, wx: { user: 'subs-ban', subscribe: 'ban' } })
  try {
    const no = await buy(mp)
    const ids = await theOneAsk(mp)
    assert.deepEqual(mp.wx.calls('POST', '/api/user/subscriptions').map((r) => r.body), [{ rejected: ids }])
    const { subs, order, messages } = await serverSide(mp, no)
    assert.equal(order.status, 'paid')
    for (const [event, state] of Object.entries(choices(subs))) assert.deepEqual(state, ['reject', 0], event)
    assert.deepEqual(messages, [])
  } finally {
    await mp.close()
  }
})

test('subscriptions switched off (errCode 20004): reported once, not asked again in this launch; both orders paid', async () => {
  const mp = await launch({ baseUrl: backend.url, wx: { user: 'subs-off', subscribe: 'off' } })
  try {
    const first = await buy(mp)
    const ids = await theOneAsk(mp)
    mp.tapTab('商品')
    const second = await buy(mp)
    assert.notEqual(second, first)
    assert.equal(mp.wx.subscribeRequests.length, 1, 'the switch is off: no second dialog')
    assert.deepEqual(mp.wx.calls('POST', '/api/user/subscriptions').map((r) => r.body), [{ rejected: ids }])
    for (const no of [first, second]) assert.equal((await serverSide(mp, no)).order.status, 'paid')
  } finally {
    await mp.close()
  }
})

test('the dialog fails (a network error) or the server cannot list templates: nothing reported, paid all the same', async () => {
  const mp = await launch({ baseUrl: backend.url, wx: { user: 'subs-error', subscribe: 'error' } })
  try {
    const no = await buy(mp)
    await theOneAsk(mp)
    assert.equal(mp.wx.calls('POST', '/api/user/subscriptions').length, 0)
    assert.equal((await serverSide(mp, no)).order.status, 'paid')

    // Listing the templates fails on the next checkout: the list from before stands, and the payment goes on.
    mp.wx.intercept = (req) => { if (req.method === 'GET' && req.url.includes('/api/user/subscriptions')) req.url = req.url.replace('/api/user/subscriptions', '/api/user/subscriptions-down') }
    mp.tapTab('商品')
    const again = await buy(mp)
    assert.equal(mp.wx.subscribeRequests.length, 2, 'the list from before is asked for again')
    assert.equal((await serverSide(mp, again)).order.status, 'paid')
  } finally {
    await mp.close()
  }
})
