// One error type for everything that can go wrong on the way to the server, with a message for users.

// The contract's error codes (and the sandbox's) in words a shopper understands.
const MESSAGES = {
  network: '网络连接失败，请检查网络后重试',
  timeout: '请求超时，请稍后重试',
  wx_login_failed: '微信登录失败，请稍后重试',
  missing_token: '登录已失效，请重新进入小程序',
  invalid_token: '登录已失效，请重新进入小程序',
  too_many_logins: '登录太频繁，请稍后再试',
  not_found: '没有找到相关内容',
  unknown_product: '商品已下架，请刷新后重新选择',
  invalid_items: '所选商品有误，请重新选择',
  invalid_quantity: '每种商品最多购买 99 件',
  order_paid: '该订单已支付',
  order_closed: '订单已关闭，请重新下单',
  order_expired: '订单已过期，请重新下单',
  trade_type_conflict: '该订单正在以其他方式支付，请重新下单',
  pay_cancelled: '您已取消支付',
  pay_failed: '支付未完成',
  bad_pay_sign: '支付参数校验失败，请重新下单',
  prepay_expired: '支付已过期，请重新发起支付',
  invalid_params: '支付参数有误',
  invalid_phone_code: '手机号授权已失效，请重新点击授权'
}

const BY_STATUS = {
  400: '请求有误',
  401: '登录已失效，请重新进入小程序',
  404: '没有找到相关内容',
  409: '订单状态已变化，请刷新后重试',
  429: '操作太频繁，请稍后再试',
  502: '微信支付暂时不可用，请稍后重试',
  503: '服务暂时不可用，请稍后重试'
}

class ApiError extends Error {
  // status: the HTTP status (0 when no answer came); code: the contract's snake_case code.
  constructor (status, code, message, detail) {
    super(message)
    this.name = 'ApiError'
    this.status = status
    this.code = code
    this.detail = detail || ''
  }
}

function messageFor (status, code) {
  return MESSAGES[code] || BY_STATUS[status] || (status >= 500 ? '服务器开小差了，请稍后重试' : '请求失败，请稍后重试')
}

// An answer from the server that is not 2xx: `{"error": {"code", "message"}}`, or anything else a proxy sent.
function fromResponse (res) {
  const body = res && res.data
  const err = body && typeof body === 'object' && body.error
  const code = (err && err.code) || 'http_' + res.statusCode
  return new ApiError(res.statusCode, code, messageFor(res.statusCode, code), (err && err.message) || '')
}

// wx.request's fail callback: no answer at all (no network, bad domain, server down, timeout).
function fromRequestFail (res) {
  const errMsg = (res && res.errMsg) || ''
  const code = /timeout/i.test(errMsg) ? 'timeout' : 'network'
  return new ApiError(0, code, MESSAGES[code], errMsg)
}

// wx.requestPayment's fail callback; "cancel" is the user closing the payment sheet.
function fromPaymentFail (res) {
  const errMsg = (res && res.errMsg) || ''
  if (/cancel/i.test(errMsg)) return new ApiError(0, 'pay_cancelled', MESSAGES.pay_cancelled, errMsg)
  const reason = errMsg.replace(/^requestPayment:fail\s*/, '')
  return new ApiError(0, 'pay_failed', MESSAGES.pay_failed + (reason ? '：' + reason : ''), errMsg)
}

// Anything thrown (including a bug) as a message for a toast or an error state.
function userMessage (err) {
  if (err instanceof ApiError) return err.message
  return '出了点问题，请稍后重试'
}

module.exports = { ApiError, fromResponse, fromRequestFail, fromPaymentFail, userMessage, messageFor }
