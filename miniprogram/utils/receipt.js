// WeChat's own confirm-receipt page (确认收货组件, order-shipping management). wx.openBusinessView opens it; it comes
// back through wx.navigateBackMiniProgram, so the buyer's choice arrives in App.onShow's referrerInfo: appId
// wx1183b055aeec94d1, extraData { status: 'success' | 'fail' | 'cancel', errormsg, req_extradata }. That answer is
// a hint for the page, never proof: the server learns it from WeChat's signed settlement push.
const CONFIRM_APPID = 'wx1183b055aeec94d1'

let waiting = null // resolve() of the confirmation under way

function settle (answer) {
  const resolve = waiting
  waiting = null
  if (resolve) resolve(answer)
}

// app.js calls this from App.onShow: the first show after the page opened ends the wait; without WeChat's
// referrer (the buyer came back another way) the choice is unknown and the page asks the server.
function onAppShow (options) {
  if (!waiting) return
  const ref = (options && options.referrerInfo) || {}
  const extra = (ref.appId === CONFIRM_APPID && ref.extraData) || {}
  settle({ status: extra.status || 'unknown', errormsg: extra.errormsg || '' })
}

// `order` is the order JSON's confirm_receipt: { merchant_id, merchant_trade_no, transaction_id }.
function confirmInWeChat (order) {
  return new Promise((resolve, reject) => {
    const extraData = {}
    for (const key of ['merchant_id', 'merchant_trade_no', 'transaction_id']) {
      if (order[key]) extraData[key] = String(order[key])
    }
    waiting = resolve
    wx.openBusinessView({
      businessType: 'weappOrderConfirm',
      extraData,
      fail (res) {
        waiting = null
        const why = /not support|not exist|fail api/i.test((res && res.errMsg) || '') ? '，请把微信升级到最新版本' : '，请稍后重试'
        reject(new Error('无法打开微信的确认收货' + why))
      }
    })
  })
}

module.exports = { confirmInWeChat, onAppShow, CONFIRM_APPID }
