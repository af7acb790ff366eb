// The helper every page uses: adds the token, heals one 401 with one new login, and turns the
// contract's errors (`{"error": {"code", "message"}}`) into readable messages and toasts.
const http = require('./http')
const session = require('./session')
const errors = require('./errors')

function toast (message) {
  wx.showToast({ title: message, icon: 'none', duration: 2500 })
}

// options: path, method, data; auth (default true) sends the token;
// toast (default true) shows the error as a toast - pages that draw an error state pass false.
async function request (options) {
  const { auth = true, toast: showToast = true } = options
  try {
    return await attempt(options, auth)
  } catch (err) {
    if (showToast) toast(errors.userMessage(err))
    throw err
  }
}

async function attempt ({ path, method = 'GET', data }, auth) {
  let token = auth ? await session.ensureToken() : ''
  const call = () => http.send({ path, method, data, header: token ? { Authorization: 'Bearer ' + token } : {} })
  let res = await call()
  if (auth && res.statusCode === 401) {
    // The token expired or was revoked: one new login, one retry. A second 401 is an answer, not a loop.
    token = await session.renew(token)
    res = await call()
  }
  if (res.statusCode >= 200 && res.statusCode < 300) return res.data
  throw errors.fromResponse(res)
}

module.exports = { request, toast }
