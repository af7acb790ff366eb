// Paying an order, and learning from the server (never from the client) whether it was paid.
const config = require('./config')
const http = require('./http')
const errors = require('./errors')
const { request } = require('./request')

function requestPayment (params) {
  return new Promise((resolve, reject) => {
    wx.requestPayment({
      timeStamp: params.timeStamp,
      nonceStr: params.nonceStr,
      package: params.package,
      signType: params.signType,
      paySign: params.paySign,
      success: resolve,
      fail: (res) => reject(errors.fromPaymentFail(res))
    })
  })
}

async function useSandbox () {
  if (config.payMode === 'wechat') return false
  return http.isSandbox()
}

// Get the pay parameters for the order and pay. Resolving only means the payment was handed to
// WeChat; the order is paid once WeChat's notification says so (see waitUntilSettled).
// `before`: a promise the payment sheet waits for (the subscribe dialog opened at the same tap); it never rejects.
async function payOrder (outTradeNo, { before } = {}) {
  const params = await request({ path: '/api/orders/' + encodeURIComponent(outTradeNo) + '/pay', method: 'POST', toast: false })
  if (before) await before
  if (await useSandbox()) {
    // No phone can pay a sandbox order: the sandbox's control call plays the person confirming on the phone.
    await request({ path: '/sandbox/control/pay', method: 'POST', data: params, auth: false, toast: false })
    return { via: 'sandbox' }
  }
  await requestPayment(params)
  return { via: 'wechat' }
}

function sleep (ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

// Ask the server for the order until it is no longer `unpaid` or the attempts run out.
// After `syncAfterAttempts` it asks once through /sync, which makes the server query WeChat itself
// (for a notification that is late). `onAttempt(order, n)` sees every answer; `stopped()` ends early.
async function waitUntilSettled (outTradeNo, { onAttempt, stopped } = {}) {
  const path = '/api/orders/' + encodeURIComponent(outTradeNo)
  let order = null
  for (let n = 1; n <= config.pollAttempts; n++) {
    const sync = n === config.syncAfterAttempts + 1
    order = await request({ path: sync ? path + '/sync' : path, method: sync ? 'POST' : 'GET', toast: false })
    if (onAttempt) onAttempt(order, n)
    if (order.status !== 'unpaid' || (stopped && stopped())) return order
    if (n < config.pollAttempts) await sleep(config.pollIntervalMs)
    if (stopped && stopped()) return order
  }
  return order
}

module.exports = { payOrder, waitUntilSettled, requestPayment }
