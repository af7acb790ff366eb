// Log in at launch; pages share the login through utils/session and utils/request.
const session = require('./utils/session')
const { request } = require('./utils/request')
const errors = require('./utils/errors')
const receipt = require('./utils/receipt')

App({
  globalData: {
    user: null,
    loginError: ''
  },

  onLaunch () {
    this.ready = this.signIn()
  },

  // Back from another mini-program, e.g. WeChat's confirm-receipt page (utils/receipt.js).
  onShow (options) {
    receipt.onAppShow(options)
  },

  // A stored token is checked with the server (POST /api/auth/check; the request helper logs in again
  // when it was revoked or expired); without one we log in straight away.
  async signIn () {
    try {
      if (session.token()) {
        await request({ path: '/api/auth/check', method: 'POST', toast: false })
      } else {
        await session.login()
      }
      this.globalData.user = session.user()
      this.globalData.loginError = ''
    } catch (err) {
      // Pages still open: the products list needs no login, and every later call tries again.
      this.globalData.loginError = errors.userMessage(err)
    }
    return this.globalData.user
  }
})
