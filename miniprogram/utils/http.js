// wx.request as a promise, plus what every answer tells us about the backend (is it the sandbox?).
const config = require('./config')
const errors = require('./errors')

// null: not known yet; true/false once an answer or GET /healthz has told us.
const backend = { sandbox: null }

function headerValue (header, name) {
  const wanted = name.toLowerCase()
  for (const key in header || {}) {
    if (key.toLowerCase() === wanted) return header[key]
  }
  return undefined
}

// Resolves with {statusCode, data, header} for any HTTP answer (4xx and 5xx too);
// rejects with an ApiError only when no answer came.
function send ({ path, method = 'GET', data, header = {} }) {
  return new Promise((resolve, reject) => {
    wx.request({
      url: config.baseUrl + path,
      method,
      data,
      header: Object.assign({ 'content-type': 'application/json' }, header),
      timeout: config.requestTimeout,
      success (res) {
        // The sandbox marks every answer; a production backend never does.
        if (String(headerValue(res.header, 'X-WeChat-Sandbox')) === '1') backend.sandbox = true
        resolve(res)
      },
      fail (res) {
        reject(errors.fromRequestFail(res))
      }
    })
  })
}

// Whether the backend is the sandbox: from an answer's header, or by asking GET /healthz once.
async function isSandbox () {
  if (backend.sandbox !== null) return backend.sandbox
  const res = await send({ path: '/healthz' })
  if (res.statusCode !== 200) throw errors.fromResponse(res)
  backend.sandbox = !!(res.data && res.data.sandbox)
  return backend.sandbox
}

module.exports = { send, isSandbox, backend, headerValue }
