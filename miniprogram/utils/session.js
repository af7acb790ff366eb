// The login: wx.login's code goes to POST /api/auth/login, the token it answers lives in storage.
// Storage is read once, at launch, into memory: wx.getStorageSync is a synchronous call into WeChat's native
// layer, and every request needs the token. Writes go to both, so the next launch finds the same login.
const http = require('./http')
const errors = require('./errors')

const TOKEN_KEY = 'miniapp.token'
const USER_KEY = 'miniapp.user'

// One login at a time: every caller that needs a token while a login is under way waits for that one.
let pending = null
let kept = null // { token, user }, read from storage on first use

function memory () {
  if (!kept) kept = { token: wx.getStorageSync(TOKEN_KEY) || '', user: wx.getStorageSync(USER_KEY) || null }
  return kept
}

function token () {
  return memory().token
}

function user () {
  return memory().user
}

function setUser (value) {
  memory().user = value
  wx.setStorageSync(USER_KEY, value)
}

function setToken (value) {
  memory().token = value
  if (value) wx.setStorageSync(TOKEN_KEY, value)
  else wx.removeStorageSync(TOKEN_KEY)
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
  setToken(res.data.token)
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
  const current = token()
  return current ? Promise.resolve(current) : login()
}

// The server refused `staleToken`: log in again, unless someone already replaced it,
// so that several requests refused at once cost one login, not one each.
function renew (staleToken) {
  if (pending) return pending
  const current = token()
  if (current && current !== staleToken) return Promise.resolve(current)
  setToken('')
  return login()
}

module.exports = { login, ensureToken, renew, token, user, setUser, TOKEN_KEY }
