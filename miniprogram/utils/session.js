// The login: wx.login's code goes to POST /api/auth/login, the token it answers lives in storage.
const http = require('./http')
const errors = require('./errors')

const TOKEN_KEY = 'miniapp.token'
const USER_KEY = 'miniapp.user'

// One login at a time: every caller that needs a token while a login is under way waits for that one.
let pending = null

function token () {
  return wx.getStorageSync(TOKEN_KEY) || ''
}

function user () {
  return wx.getStorageSync(USER_KEY) || null
}

function setUser (value) {
  wx.setStorageSync(USER_KEY, value)
}

function wxLogin () {
  return new Promise((resolve, reject) => {
    wx.login({
      success (res) {
        if (res.code) resolve(res.code)
        else reject(new errors.ApiError(0, 'wx_login_failed', errors.messageFor(0, 'wx_login_failed'), res.errMsg))
      },
      fail (res) {
        reject(new errors.ApiError(0, 'wx_login_failed', errors.messageFor(0, 'wx_login_failed'), res && res.errMsg))
      }
    })
  })
}

async function doLogin () {
  const code = await wxLogin()
  const res = await http.send({ path: '/api/auth/login', method: 'POST', data: { code } })
  if (res.statusCode !== 200 || !res.data || !res.data.token) throw errors.fromResponse(res)
  wx.setStorageSync(TOKEN_KEY, res.data.token)
  setUser(res.data.user)
  return res.data.token
}

// Log in now (or join the login already under way) and resolve with the new token.
function login () {
  if (!pending) {
    pending = doLogin().then(
      (value) => { pending = null; return value },
      (err) => { pending = null; throw err }
    )
  }
  return pending
}

// The stored token, logging in first when there is none.
function ensureToken () {
  if (pending) return pending
  return token() ? Promise.resolve(token()) : login()
}

// The server refused `staleToken`: log in again, unless someone already replaced it,
// so that several requests refused at once cost one login, not one each.
function renew (staleToken) {
  if (pending) return pending
  const current = token()
  if (current && current !== staleToken) return Promise.resolve(current)
  wx.removeStorageSync(TOKEN_KEY)
  return login()
}

module.exports = { login, ensureToken, renew, token, user, setUser, TOKEN_KEY }
