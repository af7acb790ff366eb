// The one place that says where the backend is and how the app behaves.
// Point `baseUrl` at your server: `make run` serves http://127.0.0.1:5000 in sandbox mode (or the next free
// port, which it writes into utils/dev-server.js, outside git, and which is then used here);
// in production use your HTTPS domain, which must also be listed under 开发管理 > 服务器域名 (request 合法域名).
let devServer = {}
try {
  devServer = require('./dev-server.js')
} catch (e) {} // no `make run` yet on this machine

module.exports = {
  baseUrl: devServer.port ? 'http://' + devServer.host + ':' + devServer.port : 'http://127.0.0.1:5000',

  // How to pay once the backend has given the wx.requestPayment object:
  //   'auto'   - ask the backend (GET /healthz, or the X-WeChat-Sandbox header) whether it is the sandbox;
  //              a sandbox order cannot be paid on a phone, so pay it through POST /sandbox/control/pay,
  //              otherwise call wx.requestPayment.
  //   'wechat' - always wx.requestPayment.
  payMode: 'auto',

  requestTimeout: 15000, // ms for one wx.request

  // After paying, the result page asks the server until WeChat's notification has made the order `paid`.
  pollIntervalMs: 1500,
  pollAttempts: 20,
  syncAfterAttempts: 4, // then also ask the server to query WeChat (POST /api/orders/<no>/sync), once

  // After the buyer confirmed receipt in WeChat, ask the server (every pollIntervalMs) until it says `completed`.
  receiptPollAttempts: 20,

  // Subscribe messages asked for at the pay tap (utils/subscriptions.js): a dialog that never answers, and the
  // report of an accept, hold the payment sheet back at most this long (ms).
  subscribeDialogTimeoutMs: 60000,
  subscribeReportTimeoutMs: 3000,

  pageSize: 10 // orders per page
}
