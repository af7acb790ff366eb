// One-time subscribe messages (订阅消息): at the pay tap, ask with wx.requestSubscribeMessage for the templates the
// server has configured (GET /api/user/subscriptions, fetched before the tap: WeChat lets the dialog open only from
// the tap's own handler), and tell the server what the person chose (POST /api/user/subscriptions), which keeps
// one credit per accept. Nothing here may stop paying: every outcome, refusal, "ban" or error, resolves.
const config = require('./config')
const { request } = require('./request')

const MAX_TEMPLATES = 3 // WeChat's limit for one wx.requestSubscribeMessage
const SWITCHED_OFF = 20004 // the person turned subscribe messages off in the mini-program's settings

let templates = []
let switchedOff = false // then asking again in this launch is pointless

// Which templates to ask for; an error leaves the list as it was (no dialog rather than no payment).
async function prepare () {
  try {
    const body = await request({ path: '/api/user/subscriptions', toast: false })
    templates = ((body && body.template_ids) || []).slice(0, MAX_TEMPLATES)
  } catch (err) {
    // asked again on the next page that prepares
  }
  return templates
}

function report (accepted, rejected) {
  if (!accepted.length && !rejected.length) return Promise.resolve()
  const data = {}
  if (accepted.length) data.accepted = accepted
  if (rejected.length) data.rejected = rejected
  return request({ path: '/api/user/subscriptions', method: 'POST', data, toast: false }).catch(() => {})
}

function within (promise, ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms)
    promise.then(() => { clearTimeout(timer); resolve() })
  })
}

// Call it synchronously in the tap handler. The promise resolves once WeChat's dialog has closed (WeChat shows one
// sheet at a time: the payment sheet comes after it) and, when something was accepted, once the server has the
// credit, bounded, so that the payment's own message can use it. A refusal or a ban is reported without waiting.
function ask () {
  const tmplIds = templates.slice()
  if (!tmplIds.length || switchedOff) return Promise.resolve({ asked: false })
  return new Promise((resolve) => {
    let settled = false
    const finish = (outcome) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resolve(outcome)
    }
    // Only against a callback that never comes; the person answering the dialog is not bounded by it.
    const timer = setTimeout(() => finish({ asked: true, error: 'no answer' }), config.subscribeDialogTimeoutMs)
    wx.requestSubscribeMessage({
      tmplIds,
      success (res) {
        // res[id]: 'accept' | 'reject' | 'ban' (turned off for this template) | 'filter' (hidden by WeChat)
        const accepted = tmplIds.filter((id) => res[id] === 'accept')
        const rejected = tmplIds.filter((id) => res[id] === 'reject' || res[id] === 'ban' || res[id] === 'filter')
        const sent = report(accepted, rejected)
        if (accepted.length) within(sent, config.subscribeReportTimeoutMs).then(() => finish({ asked: true, accepted, rejected }))
        else finish({ asked: true, accepted, rejected })
      },
      fail (res) {
        if (Number(res && res.errCode) === SWITCHED_OFF) {
          switchedOff = true
          report([], tmplIds)
        }
        finish({ asked: true, error: (res && res.errMsg) || 'fail' })
      }
    })
  })
}

module.exports = { prepare, ask }
