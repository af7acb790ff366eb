// The privacy-sensitive WeChat APIs the pages use, and why WeChat refused one, in words.
// Each must be declared in 小程序管理后台 → 设置 → 服务内容声明 → 用户隐私保护指引 (README, "Privacy"): an API
// that is not declared there fails with errno 112; until the user agrees to the guide (WeChat's own popup asks the
// first time, app.json has `__usePrivacyCheck__`) it fails with errno 104.
const DECLARED = {
  setClipboardData: '剪切板', // copying the order and tracking numbers
  getPhoneNumber: '手机号' // <button open-type="getPhoneNumber"> on 我的订单
}

const UNDECLARED = 112 // "api scope is not declared in the privacy agreement"
const NOT_AGREED = 104 // "privacy permission is not authorized"
const PHONE_QUOTA = 1400001 // the mini-program's phone-number verifications are used up (they are billed)

// `what` says what the user tried ("复制", "获取手机号"); `res` is the fail callback's (or e.detail's) object.
function refusalMessage (what, res) {
  const errno = res && Number(res.errno)
  if (errno === UNDECLARED) return '无法' + what + '：小程序未在《用户隐私保护指引》中声明此项，请联系商家'
  if (errno === NOT_AGREED) return '您未同意《用户隐私保护指引》，暂时无法' + what
  if (errno === PHONE_QUOTA) return '本小程序的手机号验证额度已用完，暂时无法' + what + '，请稍后再试'
  return what + '失败，请稍后重试'
}

module.exports = { DECLARED, UNDECLARED, NOT_AGREED, PHONE_QUOTA, refusalMessage }
