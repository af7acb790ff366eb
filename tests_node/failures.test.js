// What goes wrong, shown as a state with words and a way on, never a blank page:
// payments that fail (wx.requestPayment's fail callback, the sandbox refusing), slow confirmations,
// the network gone (a bad URL, the backend stopped), and the phone-number binding.
'use strict'
const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { startBackend, freePort } = require('./harness/backend')
const { launch } = require('./harness/miniprogram')

let backend
before(async () => { backend = await startBackend() })
after(async () => { if (backend) await backend.stop() })

async function toCheckout (mp, index = 3) {
  const products = await mp.waitForRoute('pages/products/products', 'ready')
  products.tap({ text: '＋', dataset: { index } })
  products.tap('去结算')
  return mp.waitForRoute('pages/checkout/checkout', 'ready')
}

async function serverStatus (mp, no) {
  const res = await backend.api('GET', '/api/orders/' + no, { token: mp.wx.storage.get('miniapp.token') })
  return res.data.status
}

// An order with its pay parameters, made behind the page's back (as if the phone had just paid it).
async function unpaidOrder (mp) {
  await mp.app.ready
  const token = mp.wx.storage.get('miniapp.token')
  const order = await backend.api('POST', '/api/orders', { token, body: { items: [{ product_id: 4, quantity: 1 }] } })
  assert.equal(order.status, 201)
  const params = await backend.api('POST', '/api/orders/' + order.data.out_trade_no + '/pay', { token })
  assert.equal(params.status, 200)
  return { no: order.data.out_trade_no, params: params.data }
}

test('the user closes the payment sheet: an error state with a way to pay again, the order still unpaid', async () => {
  const mp = await launch({ baseUrl: backend.url, config: { payMode: 'wechat' }, wx: { user: 'fail-cancel', payment: 'cancel' } })
  try {
    const checkout = await toCheckout(mp)
    checkout.tap('微信支付')
    const failed = await mp.waitForRoute('pages/checkout/checkout', 'failed')
    assert.match(failed.text(), /您已取消支付/)
    assert.match(failed.text(), /合计 ¥0\.01/)
    assert.deepEqual(failed.tappables().map((t) => t.text), ['重新支付', '查看订单'])
    assert.equal(await serverStatus(mp, failed.data.outTradeNo), 'unpaid')
    assert.equal(mp.wx.payments.length, 1)
  } finally {
    await mp.close()
  }
})

test('WeChat refuses the payment (wx.requestPayment fail with the sandbox\'s reason)', async () => {
  const mp = await launch({ baseUrl: backend.url, config: { payMode: 'wechat' }, wx: { user: 'fail-wechat' } })
  // The phone presents a tampered signature; the sandbox checks it as WeChat does and refuses.
  mp.wx.payment = (params) => mp.wx.sandboxPay(Object.assign({}, params, { paySign: 'F'.repeat(32) }))
  try {
    const checkout = await toCheckout(mp)
    checkout.tap('微信支付')
    const failed = await mp.waitForRoute('pages/checkout/checkout', 'failed')
    assert.match(failed.text(), /支付未完成：the pay parameters' signature does not verify/)
    assert.equal(await serverStatus(mp, failed.data.outTradeNo), 'unpaid')
  } finally {
    await mp.close()
  }
})

test('the sandbox refuses the control call: an error state; paying again with the same order works', async () => {
  const mp = await launch({ baseUrl: backend.url, wx: { user: 'fail-sandbox' } })
  mp.wx.intercept = (req) => {
    if (req.url.endsWith('/sandbox/control/pay')) {
      const body = JSON.parse(req.body)
      body.paySign = '0'.repeat(32)
      req.body = JSON.stringify(body)
    }
  }
  try {
    const checkout = await toCheckout(mp)
    checkout.tap('微信支付')
    const failed = await mp.waitForRoute('pages/checkout/checkout', 'failed')
    assert.deepEqual(mp.wx.calls('POST', '/sandbox/control/pay').map((r) => r.status), [400])
    assert.match(failed.text(), /支付参数校验失败/)
    const no = failed.data.outTradeNo
    assert.equal(await serverStatus(mp, no), 'unpaid')

    mp.wx.intercept = null
    failed.tap('重新支付')
    await mp.waitForRoute('pages/result/result', 'paid')
    assert.equal(mp.page.data.order.outTradeNo, no)
    assert.equal(mp.wx.calls('POST', '/api/orders').length, 1, 'no second order')
  } finally {
    await mp.close()
  }
})

test('the result page keeps asking until WeChat\'s notification arrives', async () => {
  const mp = await launch({ baseUrl: backend.url, config: { pollAttempts: 500, syncAfterAttempts: 1000 }, wx: { user: 'fail-slow' } })
  try {
    const { no, params } = await unpaidOrder(mp)
    mp.router.navigateTo({ url: '/pages/result/result?out_trade_no=' + no })
    const waiting = await mp.waitFor((p) => p.route === 'pages/result/result' && p.data.attempts >= 3)
    assert.equal(waiting.data.state, 'waiting')
    assert.match(waiting.text(), /正在等待微信支付确认… .*已查询 \d+ 次/)

    // The person pays now; WeChat notifies the backend; the page sees it on its next question.
    const paid = await backend.api('POST', '/sandbox/control/pay', { body: params })
    assert.equal(paid.status, 200)
    const done = await mp.waitForRoute('pages/result/result', 'paid')
    assert.equal(done.data.order.transactionId, paid.data.transaction_id)
  } finally {
    await mp.close()
  }
})

test('no confirmation after every attempt: a pending state that asked WeChat once (/sync), and a refresh that finds it paid', async () => {
  const mp = await launch({ baseUrl: backend.url, config: { pollAttempts: 4, syncAfterAttempts: 2 }, wx: { user: 'fail-pending' } })
  try {
    const { no, params } = await unpaidOrder(mp)
    mp.router.navigateTo({ url: '/pages/result/result?out_trade_no=' + no })
    const pending = await mp.waitForRoute('pages/result/result', 'pending')
    assert.match(pending.text(), /暂未收到微信的支付确认/)
    assert.match(pending.text(), /待支付/)
    assert.equal(mp.wx.calls('POST', '/api/orders/' + no + '/sync').length, 1)
    assert.equal(mp.wx.calls('GET', '/api/orders/' + no).length, 3)

    assert.equal((await backend.api('POST', '/sandbox/control/pay', { body: params })).status, 200)
    pending.tap('刷新状态')
    await mp.waitForRoute('pages/result/result', 'paid')
  } finally {
    await mp.close()
  }
})

test('a bad base URL: the catalogue shows a network error with a retry that recovers once the URL is right', async () => {
  const dead = 'http://127.0.0.1:' + await freePort()
  const mp = await launch({ baseUrl: dead, wx: { user: 'fail-url' } })
  try {
    const products = await mp.waitForRoute('pages/products/products', 'error')
    assert.match(products.text(), /商品加载失败 网络连接失败，请检查网络后重试 重新加载/)
    await mp.app.ready
    assert.equal(mp.app.globalData.loginError, '网络连接失败，请检查网络后重试')

    mp.config.baseUrl = backend.url
    products.tap('重新加载')
    const ready = await mp.waitForRoute('pages/products/products', 'ready')
    assert.equal(ready.data.products.length, 4)
  } finally {
    await mp.close()
  }
})

test('phone number: refused by the user, bound with a code, a used code, and a backend without the endpoint', async () => {
  const mp = await launch({ baseUrl: backend.url, wx: { user: 'fail-phone' } })
  try {
    await mp.app.ready
    mp.tapTab('我的订单')
    const orders = await mp.waitFor((p) => p.route === 'pages/orders/orders' && p.data.state === 'empty' && p.data.phone === 'offer')
    assert.match(orders.text(), /绑定手机号（可选） 订单有问题时/)

    // The user taps the button and then declines: no request, a gentle toast.
    await orders.tap('授权绑定手机号', 'getphonenumber', { errMsg: 'getPhoneNumber:fail user deny' })
    assert.equal(mp.wx.calls('POST', '/api/user/phone').length, 0)
    assert.deepEqual(mp.wx.toasts, ['未授权手机号，可以稍后再绑定'])

    // A 404 from a backend that does not offer binding: said once, the button goes away.
    mp.wx.intercept = (req) => { req.url = req.url.replace('/api/user/phone', '/api/user/phone-missing') }
    await orders.tap('授权绑定手机号', 'getphonenumber', { code: 'tel:13912345678', errMsg: 'getPhoneNumber:ok' })
    assert.equal(orders.data.phone, 'unavailable')
    assert.match(orders.text(), /手机号绑定暂未开放/)
    assert.equal(orders.tappables('getphonenumber').length, 0)
    mp.wx.intercept = null

    // With the endpoint: bound, shown masked.
    orders.instance.setData({ phone: 'offer' })
    await orders.tap('授权绑定手机号', 'getphonenumber', { code: 'tel:13912345678', errMsg: 'getPhoneNumber:ok' })
    assert.equal(orders.data.phone, 'bound')
    assert.match(orders.text(), /已绑定手机号 139\*+5678/)
    assert.equal(mp.wx.storage.get('miniapp.user').has_phone, true)

    // The same code again (single use at WeChat): an error next to the button, which stays.
    orders.instance.setData({ phone: 'offer' })
    await orders.tap('授权绑定手机号', 'getphonenumber', { code: 'tel:13912345678', errMsg: 'getPhoneNumber:ok' })
    assert.equal(orders.data.phone, 'offer')
    assert.match(orders.text(), /手机号授权已失效，请重新点击授权/)
  } finally {
    await mp.close()
  }
})

test('privacy refusals say why: the clipboard undeclared (112) or not agreed (104), the phone quota used up (1400001)', async () => {
  const mp = await launch({ baseUrl: backend.url, wx: { user: 'fail-privacy' } })
  try {
    const { no } = await unpaidOrder(mp)
    mp.router.navigateTo({ url: '/pages/order-detail/order-detail?out_trade_no=' + no })
    const detail = await mp.waitForRoute('pages/order-detail/order-detail', 'ready')
    detail.tap('订单号')
    await mp.wx.idle()
    await new Promise((resolve) => setImmediate(resolve))
    assert.equal(mp.wx.clipboard, no, 'copied')
    assert.deepEqual(mp.wx.toasts, [], 'WeChat shows its own "copied" toast')

    mp.wx.refuse.setClipboardData = { errno: 112 }
    detail.tap('订单号')
    await new Promise((resolve) => setImmediate(resolve))
    mp.wx.refuse.setClipboardData = { errno: 104 }
    detail.tap('订单号')
    await new Promise((resolve) => setImmediate(resolve))
    assert.deepEqual(mp.wx.toasts, ['无法复制：小程序未在《用户隐私保护指引》中声明此项，请联系商家', '您未同意《用户隐私保护指引》，暂时无法复制'])

    mp.tapTab('我的订单')
    const orders = await mp.waitFor((p) => p.route === 'pages/orders/orders' && p.data.state === 'ready' && p.data.phone === 'offer')
    await orders.tap('授权绑定手机号', 'getphonenumber', { errMsg: 'getPhoneNumber:fail no permission', errno: 1400001 })
    assert.match(orders.text(), /本小程序的手机号验证额度已用完，暂时无法获取手机号/)
    await orders.tap('授权绑定手机号', 'getphonenumber', { errMsg: 'getPhoneNumber:fail api scope is not declared in the privacy agreement', errno: 112 })
    assert.match(orders.text(), /无法获取手机号：小程序未在《用户隐私保护指引》中声明此项/)
    assert.equal(mp.wx.calls('POST', '/api/user/phone').length, 0, 'no code, no request')
    assert.equal(orders.data.phone, 'offer', 'the button stays for a later try')
  } finally {
    await mp.close()
  }
})

// Last: it stops the backend.
test('the backend stops mid-session: the orders page and the result page show a network error, not a blank page', async () => {
  const mp = await launch({ baseUrl: backend.url, config: { pollAttempts: 1000 }, wx: { user: 'fail-down' } })
  try {
    const { no } = await unpaidOrder(mp)
    mp.tapTab('我的订单')
    const orders = await mp.waitForRoute('pages/orders/orders', 'ready')
    orders.tap({ dataset: { no } })
    await mp.waitForRoute('pages/order-detail/order-detail', 'ready')
    mp.router.navigateTo({ url: '/pages/result/result?out_trade_no=' + no })
    await mp.waitFor((p) => p.route === 'pages/result/result' && p.data.attempts >= 1)

    await backend.stop()
    const result = await mp.waitForRoute('pages/result/result', 'error')
    assert.match(result.text(), /查询支付结果失败 网络连接失败，请检查网络后重试 重试/)

    mp.tapTab('我的订单')
    const down = await mp.waitForRoute('pages/orders/orders', 'error')
    assert.match(down.text(), /订单加载失败 网络连接失败/)
    assert.ok(down.tappables().some((t) => t.text === '重新加载'))
  } finally {
    await mp.close()
  }
})
