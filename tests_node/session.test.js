// The login the app keeps: a token in storage, checked at launch, and a 401 healed by exactly one new login.
'use strict'
const path = require('node:path')
const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { startBackend } = require('./harness/backend')
const { launch, MP_ROOT } = require('./harness/miniprogram')

let backend
before(async () => { backend = await startBackend() })
after(async () => { if (backend) await backend.stop() })

// The app's own request helper, as loaded by the running mini-program.
function helper () {
  return require(path.join(MP_ROOT, 'utils', 'request.js'))
}

async function revoke (token) {
  assert.equal((await backend.api('POST', '/api/auth/logout', { token })).status, 204)
  const check = await backend.api('POST', '/api/auth/check', { token })
  assert.equal(check.status, 401)
  assert.equal(check.data.error.code, 'invalid_token')
}

test('a 401 mid-session is healed by exactly one re-login, and the page never shows it', async () => {
  const mp = await launch({ baseUrl: backend.url, wx: { user: 'session-alice' } })
  try {
    await mp.app.ready
    assert.equal(mp.wx.logins, 1)
    const before = mp.wx.storage.get('miniapp.token')
    await revoke(before) // behind the page's back: another device logged out

    mp.tapTab('我的订单')
    const orders = await mp.waitForRoute('pages/orders/orders', 'empty')
    assert.match(orders.text(), /还没有订单/)

    assert.equal(mp.wx.logins, 2, 'one more wx.login')
    assert.equal(mp.wx.calls('POST', '/api/auth/login').length, 2)
    const tries = mp.wx.calls('GET', '/api/orders')
    assert.deepEqual(tries.map((r) => r.status), [401, 200], 'refused once, then retried once')
    const after = mp.wx.storage.get('miniapp.token')
    assert.notEqual(after, before)
    assert.equal(tries[0].headers.authorization, 'Bearer ' + before)
    assert.equal(tries[1].headers.authorization, 'Bearer ' + after)
    assert.deepEqual(mp.wx.toasts, [], 'no error shown to the user')
  } finally {
    await mp.close()
  }
})

test('storage is read once at launch, not on every request; a re-login writes the new token through', async () => {
  const first = await launch({ baseUrl: backend.url, wx: { user: 'session-frank' } })
  await first.app.ready
  const storage = Object.fromEntries(first.wx.storage)
  await first.close()

  const mp = await launch({ baseUrl: backend.url, wx: { user: 'session-frank', storage } })
  try {
    await mp.app.ready
    mp.tapTab('我的订单')
    await mp.waitForRoute('pages/orders/orders', 'empty')
    const { request } = helper()
    for (let i = 0; i < 5; i++) await request({ path: '/api/orders?page=1&per_page=5' })
    const authed = mp.wx.requests.filter((r) => r.headers.authorization)
    assert.ok(authed.length >= 7, authed.length + ' requests carried the token')
    assert.equal(mp.wx.count('getStorageSync', 'miniapp.token'), 1, 'the token was read once')
    assert.equal(mp.wx.count('getStorageSync'), 2, 'token and user, once each')

    // Revoked behind its back: the new token is kept in memory and in storage, still without reading storage again.
    await revoke(storage['miniapp.token'])
    await request({ path: '/api/orders?page=1&per_page=5' })
    assert.equal(mp.wx.logins, 1)
    const renewed = mp.wx.storage.get('miniapp.token')
    assert.notEqual(renewed, storage['miniapp.token'])
    assert.equal(mp.wx.requests[mp.wx.requests.length - 1].headers.authorization, 'Bearer ' + renewed)
    assert.equal(mp.wx.count('getStorageSync'), 2)
  } finally {
    await mp.close()
  }
})

test('several requests refused at once share one new login', async () => {
  const mp = await launch({ baseUrl: backend.url, wx: { user: 'session-bob' } })
  try {
    await mp.app.ready
    await revoke(mp.wx.storage.get('miniapp.token'))
    const { request } = helper()
    const answers = await Promise.all([
      request({ path: '/api/orders?page=1&per_page=5' }),
      request({ path: '/api/auth/check', method: 'POST' }),
      request({ path: '/api/orders', method: 'POST', data: { items: [{ product_id: 4, quantity: 1 }] } })
    ])
    assert.equal(answers[0].total, 0)
    assert.equal(answers[1].valid, true)
    assert.equal(answers[2].status, 'unpaid')
    assert.equal(mp.wx.logins, 2, 'launch + one re-login for all three')
    assert.equal(mp.wx.calls('POST', '/api/auth/login').length, 2)
  } finally {
    await mp.close()
  }
})

test('a second 401 after the re-login is an error state, not a loop', async () => {
  const mp = await launch({ baseUrl: backend.url, wx: { user: 'session-carol' } })
  try {
    await mp.app.ready
    // A broken proxy that drops the Authorization header: every /api/orders call is refused.
    mp.wx.intercept = (req) => { if (req.url.includes('/api/orders')) delete req.headers.authorization }
    mp.tapTab('我的订单')
    const orders = await mp.waitForRoute('pages/orders/orders', 'error')
    assert.match(orders.text(), /订单加载失败 登录已失效/)
    assert.ok(orders.tappables().some((t) => t.text === '重新加载'))
    assert.equal(mp.wx.logins, 2, 'exactly one re-login')
    assert.deepEqual(mp.wx.calls('GET', '/api/orders').map((r) => r.status), [401, 401])
  } finally {
    await mp.close()
  }
})

test('a stored token is checked at launch: kept when valid, replaced by one login when revoked', async () => {
  const first = await launch({ baseUrl: backend.url, wx: { user: 'session-dave' } })
  await first.app.ready
  const storage = Object.fromEntries(first.wx.storage)
  await first.close()

  const again = await launch({ baseUrl: backend.url, wx: { user: 'session-dave', storage } })
  try {
    await again.app.ready
    assert.equal(again.wx.logins, 0, 'no wx.login with a valid stored token')
    assert.deepEqual(again.wx.calls('POST', '/api/auth/check').map((r) => r.status), [200])
    assert.equal(again.app.globalData.user.id, storage['miniapp.user'].id)
  } finally {
    await again.close()
  }

  await revoke(storage['miniapp.token'])
  const revoked = await launch({ baseUrl: backend.url, wx: { user: 'session-dave', storage } })
  try {
    await revoked.app.ready
    assert.equal(revoked.wx.logins, 1)
    assert.deepEqual(revoked.wx.calls('POST', '/api/auth/check').map((r) => r.status), [401, 200])
    assert.notEqual(revoked.wx.storage.get('miniapp.token'), storage['miniapp.token'])
    assert.equal(revoked.app.globalData.user.id, storage['miniapp.user'].id, 'the same person')
  } finally {
    await revoked.close()
  }
})

test('wx.login failing: the catalogue still shows, pages that need a login say so, and a retry recovers', async () => {
  const mp = await launch({ baseUrl: backend.url, wx: { user: 'session-erin', loginFails: true } })
  try {
    await mp.app.ready
    assert.equal(mp.app.globalData.loginError, '微信登录失败，请稍后重试')
    await mp.waitForRoute('pages/products/products', 'ready')

    mp.tapTab('我的订单')
    const orders = await mp.waitForRoute('pages/orders/orders', 'error')
    assert.match(orders.text(), /微信登录失败/)

    mp.wx.loginFails = false
    orders.tap('重新加载')
    await mp.waitForRoute('pages/orders/orders', 'empty')
    assert.ok(mp.wx.storage.get('miniapp.token'))
  } finally {
    await mp.close()
  }
})
