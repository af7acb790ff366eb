// A `wx` for Node: wx.request makes real HTTP calls, wx.login hands out codes, wx.requestPayment pays
// through the sandbox's control call as the person holding the phone would, and navigation goes to the
// harness's page stack. Any wx API the shim does not know throws, so page code cannot silently call nothing.
'use strict'
const http = require('node:http')
const https = require('node:https')

function later (fn, ...args) {
  if (typeof fn === 'function') setImmediate(fn, ...args)
}

// success/fail/complete as WeChat calls them, asynchronously.
function reply (opts, ok, res) {
  later(() => {
    if (ok && opts.success) opts.success(res)
    if (!ok && opts.fail) opts.fail(res)
    if (opts.complete) opts.complete(res)
  })
}

function clone (value) {
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value))
}

function queryString (data) {
  return Object.keys(data).map((k) => encodeURIComponent(k) + '=' + encodeURIComponent(data[k] === null ? '' : data[k])).join('&')
}

// Headers as WeChat hands them to success(): names as the server wrote them.
function rawHeaders (raw) {
  const header = {}
  for (let i = 0; i < raw.length; i += 2) header[raw[i]] = raw[i + 1]
  return header
}

function createWx (options = {}) {
  const shim = {
    user: options.user || 'node-user', // codes are "<user>#<n>": the sandbox maps them all to one openid
    wechatBase: options.wechatBase || '', // where "WeChat" (the sandbox) is, for requestPayment
    payment: options.payment || 'sandbox', // 'sandbox' | 'cancel' | async (params) => ({ ok, errMsg })
    // The buyer on WeChat's confirm-receipt page: 'confirm' (through the sandbox) | 'cancel' | 'fail'
    // | async (extraData) => ({ status, errormsg }).
    receipt: options.receipt || 'confirm',
    businessViews: [], // { businessType, extraData } of every wx.openBusinessView
    // The person in wx.requestSubscribeMessage's dialog: 'accept' | 'reject' | 'ban' (each template's answer),
    // 'off' (subscribe messages turned off: fail with errCode 20004), 'error' (the dialog fails), or
    // (tmplIds) => WeChat's success answer. An accept grants the sandbox's credits, as WeChat records them.
    subscribe: options.subscribe || 'reject',
    subscribeRequests: [], // { tmplIds, gesture }
    gesture: false, // true while a tap handler runs (the harness's tap sets it): WeChat's "user TAP gesture"
    grants: [], // { body, status } of each credit the sandbox granted
    loginFails: !!options.loginFails,
    intercept: null, // (req) => void: a test may alter a request on its way out (fault injection)
    router: options.router || null,
    authSetting: Object.assign({}, options.authSetting),
    // api -> what its fail callback gets, e.g. { setClipboardData: { errno: 112 } }: WeChat refusing a privacy API.
    refuse: Object.assign({}, options.refuse),
    storage: new Map(Object.entries(options.storage || {}).map(([k, v]) => [k, clone(v)])), // what an earlier run left
    requests: [], // { method, url, path, body, headers, status, error }
    logins: 0,
    payments: [],
    receipts: [], // { body, status, answer } of each confirm-receipt control call
    toasts: [],
    modals: [],
    clipboard: '',
    apiCalls: [], // { api, arg }: every wx.* call the mini-program made, its first argument when a string (a storage key)
    inflight: 0
  }

  // A refusal the test asked for, with WeChat's errMsg shape ("setClipboardData:fail api scope is not declared ...").
  function refused (opts, api) {
    const r = shim.refuse[api]
    if (!r) return false
    const reasons = { 112: 'api scope is not declared in the privacy agreement', 104: 'privacy permission is not authorized' }
    reply(opts, false, Object.assign({ errMsg: api + ':fail ' + (reasons[r.errno] || 'unknown error') }, r))
    return true
  }

  function request (opts) {
    const method = String(opts.method || 'GET').toUpperCase()
    const headers = {}
    for (const [k, v] of Object.entries(opts.header || {})) headers[k.toLowerCase()] = String(v)
    if (!headers['content-type']) headers['content-type'] = 'application/json'
    let url = String(opts.url || '')
    let body
    const data = opts.data
    if (method === 'GET' && data && typeof data === 'object') {
      const qs = queryString(data)
      if (qs) url += (url.includes('?') ? '&' : '?') + qs
    } else if (typeof data === 'string') {
      body = data
    } else if (data !== undefined && data !== null) {
      body = headers['content-type'].includes('json') ? JSON.stringify(data) : queryString(data)
    }
    const req = { method, url, headers, body }
    if (shim.intercept) shim.intercept(req)
    const entry = { method: req.method, url: req.url, path: '', body: req.body === undefined ? undefined : safeJson(req.body), headers: req.headers }
    shim.requests.push(entry)

    let target
    try {
      target = new URL(req.url)
      if (target.protocol !== 'http:' && target.protocol !== 'https:') throw new Error('bad scheme')
    } catch (err) {
      entry.error = 'invalid url'
      reply(opts, false, { errMsg: 'request:fail invalid url "' + req.url + '"' })
      return { abort () {} }
    }
    entry.path = target.pathname + target.search
    shim.inflight++
    let settled = false
    const finish = (ok, res) => {
      if (settled) return
      settled = true
      shim.inflight--
      reply(opts, ok, res)
    }
    const lib = target.protocol === 'https:' ? https : http
    const outgoing = lib.request(target, { method: req.method, headers: req.headers, agent: false }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        let payload = text
        if ((opts.dataType || 'json') === 'json') {
          try { payload = JSON.parse(text) } catch (err) { /* WeChat leaves non-JSON as the string */ }
        }
        entry.status = res.statusCode
        finish(true, { data: payload, statusCode: res.statusCode, header: rawHeaders(res.rawHeaders), cookies: [], errMsg: 'request:ok' })
      })
      res.on('error', (err) => { entry.error = err.message; finish(false, { errMsg: 'request:fail ' + err.message }) })
    })
    outgoing.setTimeout(opts.timeout || 60000, () => {
      entry.error = 'timeout'
      finish(false, { errMsg: 'request:fail timeout' })
      outgoing.destroy()
    })
    outgoing.on('error', (err) => {
      entry.error = err.code || err.message
      finish(false, { errMsg: 'request:fail ' + (err.code || err.message) })
    })
    if (req.body !== undefined) outgoing.write(req.body)
    outgoing.end()
    return { abort () { outgoing.destroy(); finish(false, { errMsg: 'request:fail abort' }) } }
  }

  function safeJson (text) {
    try { return JSON.parse(text) } catch (err) { return text }
  }

  async function sandboxPay (params) {
    const res = await fetch(shim.wechatBase + '/sandbox/control/pay', {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(params)
    })
    const answer = await res.json().catch(() => ({}))
    if (res.ok) return { ok: true }
    return { ok: false, errMsg: 'requestPayment:fail ' + ((answer.error && answer.error.message) || res.status) }
  }

  function requestPayment (opts) {
    const params = {}
    for (const k of ['timeStamp', 'nonceStr', 'package', 'signType', 'paySign']) params[k] = opts[k]
    shim.payments.push(params)
    if (Object.values(params).some((v) => v === undefined || v === '')) {
      reply(opts, false, { errMsg: 'requestPayment:fail parameter error' })
      return
    }
    if (shim.payment === 'cancel') {
      reply(opts, false, { errMsg: 'requestPayment:fail cancel' })
      return
    }
    const pay = typeof shim.payment === 'function' ? shim.payment : sandboxPay
    shim.inflight++
    Promise.resolve(pay(params)).then(
      (r) => { shim.inflight--; reply(opts, r.ok, { errMsg: r.ok ? 'requestPayment:ok' : r.errMsg }) },
      (err) => { shim.inflight--; reply(opts, false, { errMsg: 'requestPayment:fail ' + err.message }) }
    )
  }

  // The buyer confirms receipt: the sandbox plays WeChat, which records it and pushes the signed settlement event
  // to the backend. WeChat's page answers 'fail' when it cannot (the order is not awaiting receipt, another payer).
  async function sandboxConfirm (extraData) {
    const body = extraData.merchant_trade_no ? { out_trade_no: extraData.merchant_trade_no } : { transaction_id: extraData.transaction_id }
    const res = await fetch(shim.wechatBase + '/sandbox/control/confirm-receipt', {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body)
    })
    const answer = await res.json().catch(() => ({}))
    shim.receipts.push({ body, status: res.status, answer })
    if (res.ok) return { status: 'success' }
    return { status: 'fail', errormsg: (answer.error && answer.error.message) || String(res.status) }
  }

  const CONFIRM_APPID = 'wx1183b055aeec94d1' // WeChat's confirm-receipt page, as referrerInfo names it

  // WeChat opens its confirm-receipt page over the mini-program (onHide), the buyer chooses, and the page goes back
  // with wx.navigateBackMiniProgram: App.onShow gets referrerInfo { appId, extraData: { status, errormsg, req_extradata } }.
  function openBusinessView (opts = {}) {
    const extraData = clone(opts.extraData || {})
    shim.businessViews.push({ businessType: opts.businessType, extraData })
    if (opts.businessType !== 'weappOrderConfirm') {
      reply(opts, false, { errMsg: 'openBusinessView:fail invalid businessType' })
      return
    }
    if (refused(opts, 'openBusinessView')) return
    if (!shim.router) throw new Error('wx.openBusinessView needs the harness router')
    shim.router.leaveApp()
    reply(opts, true, { errMsg: 'openBusinessView:ok' })
    const act = shim.receipt
    shim.inflight++
    Promise.resolve()
      .then(() => (typeof act === 'function' ? act(extraData) : act === 'confirm' ? sandboxConfirm(extraData) : { status: act }))
      .catch((err) => ({ status: 'fail', errormsg: err.message }))
      .then((answer) => {
        shim.inflight--
        later(() => shim.router.returnToApp({
          scene: 1038, // back from another mini-program
          referrerInfo: { appId: CONFIRM_APPID, extraData: Object.assign({ req_extradata: extraData }, answer) }
        }))
      })
  }

  async function grantCredits (templateIds) {
    const body = { code: shim.user + '#' + shim.logins, template_ids: templateIds } // the sandbox knows the person by a login code
    const res = await fetch(shim.wechatBase + '/sandbox/control/subscribe', {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body)
    })
    shim.grants.push({ body, status: res.status, answer: await res.json().catch(() => ({})) })
    if (!res.ok) throw new Error('the sandbox refused the credits: ' + res.status)
  }

  // WeChat opens its dialog only from a tap's own handler, answers per template, and fails as a whole when the
  // person turned subscribe messages off (20004).
  function requestSubscribeMessage (opts = {}) {
    const tmplIds = Array.isArray(opts.tmplIds) ? opts.tmplIds.slice() : []
    shim.subscribeRequests.push({ tmplIds, gesture: shim.gesture })
    if (!shim.gesture) {
      reply(opts, false, { errMsg: 'requestSubscribeMessage:fail can only be invoked by user TAP gesture.' })
      return
    }
    if (!tmplIds.length) {
      reply(opts, false, { errMsg: 'requestSubscribeMessage:fail empty template id list', errCode: 10001 })
      return
    }
    const mode = shim.subscribe
    if (mode === 'off') {
      reply(opts, false, { errMsg: 'requestSubscribeMessage:fail main switch is switched off', errCode: 20004 })
      return
    }
    if (mode === 'error') {
      reply(opts, false, { errMsg: 'requestSubscribeMessage:fail network error', errCode: 10002 })
      return
    }
    const answer = { errMsg: 'requestSubscribeMessage:ok' }
    if (typeof mode === 'function') Object.assign(answer, mode(tmplIds))
    else for (const id of tmplIds) answer[id] = mode
    const accepted = tmplIds.filter((id) => answer[id] === 'accept')
    shim.inflight++
    Promise.resolve(accepted.length ? grantCredits(accepted) : null).then(
      () => { shim.inflight--; reply(opts, true, answer) },
      (err) => { shim.inflight--; reply(opts, false, { errMsg: 'requestSubscribeMessage:fail ' + err.message }) }
    )
  }

  function navigation (name) {
    return (opts = {}) => {
      if (!shim.router) throw new Error('wx.' + name + ' needs the harness router')
      let res
      try {
        shim.router[name](opts)
        res = { ok: true, value: { errMsg: name + ':ok' } }
      } catch (err) {
        res = { ok: false, value: { errMsg: name + ':fail ' + err.message } }
      }
      reply(opts, res.ok, res.value)
    }
  }

  const api = {
    request,
    requestPayment,
    openBusinessView,
    requestSubscribeMessage,
    login (opts = {}) {
      shim.logins++
      if (shim.loginFails) reply(opts, false, { errMsg: 'login:fail network' })
      else reply(opts, true, { code: shim.user + '#' + shim.logins, errMsg: 'login:ok' })
    },
    checkSession (opts = {}) { reply(opts, true, { errMsg: 'checkSession:ok' }) },

    getStorageSync (key) { return shim.storage.has(key) ? clone(shim.storage.get(key)) : '' },
    setStorageSync (key, value) { shim.storage.set(key, clone(value)) },
    removeStorageSync (key) { shim.storage.delete(key) },
    clearStorageSync () { shim.storage.clear() },

    showToast (opts = {}) { shim.toasts.push(opts.title); reply(opts, true, { errMsg: 'showToast:ok' }) },
    hideToast (opts = {}) { reply(opts, true, { errMsg: 'hideToast:ok' }) },
    showLoading (opts = {}) { reply(opts, true, { errMsg: 'showLoading:ok' }) },
    hideLoading (opts = {}) { reply(opts, true, { errMsg: 'hideLoading:ok' }) },
    showModal (opts = {}) {
      shim.modals.push({ title: opts.title, content: opts.content })
      reply(opts, true, { confirm: true, cancel: false, errMsg: 'showModal:ok' })
    },
    stopPullDownRefresh (opts = {}) { reply(opts, true, { errMsg: 'stopPullDownRefresh:ok' }) },
    setClipboardData (opts = {}) {
      if (refused(opts, 'setClipboardData')) return
      shim.clipboard = String(opts.data)
      reply(opts, true, { errMsg: 'setClipboardData:ok' })
    },

    getSetting (opts = {}) { reply(opts, true, { authSetting: Object.assign({}, shim.authSetting), errMsg: 'getSetting:ok' }) },
    authorize (opts = {}) {
      const granted = shim.authSetting[opts.scope] !== false
      if (granted) shim.authSetting[opts.scope] = true
      reply(opts, granted, { errMsg: granted ? 'authorize:ok' : 'authorize:fail auth deny' })
    },
    openSetting (opts = {}) { reply(opts, true, { authSetting: Object.assign({}, shim.authSetting), errMsg: 'openSetting:ok' }) },

    navigateTo: navigation('navigateTo'),
    redirectTo: navigation('redirectTo'),
    switchTab: navigation('switchTab'),
    navigateBack: navigation('navigateBack'),
    reLaunch: navigation('reLaunch')
  }

  shim.sandboxPay = sandboxPay

  const counted = {}
  shim.wx = new Proxy(api, {
    get (target, name) {
      if (name in target) {
        if (!counted[name]) {
          counted[name] = (...args) => {
            shim.apiCalls.push({ api: name, arg: typeof args[0] === 'string' ? args[0] : undefined })
            return target[name](...args)
          }
        }
        return counted[name]
      }
      if (typeof name === 'symbol') return undefined
      throw new Error('wx.' + String(name) + ' is not in the test shim: add it there if the mini-program needs it')
    }
  })

  // Every request and payment under way has finished.
  shim.idle = async function idle (timeout = 10000) {
    const deadline = Date.now() + timeout
    while (shim.inflight > 0) {
      if (Date.now() > deadline) throw new Error(shim.inflight + ' requests still under way')
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
  }

  // How often the mini-program called wx[api] (with `arg` as its first argument, when given).
  shim.count = function count (api, arg) {
    return shim.apiCalls.filter((c) => c.api === api && (arg === undefined || c.arg === arg)).length
  }

  // Requests made to a path (ignoring the query), e.g. shim.calls('POST', '/api/auth/login').
  shim.calls = function calls (method, path) {
    return shim.requests.filter((r) => r.method === method && r.path.split('?')[0] === path)
  }

  return shim
}

module.exports = { createWx }
