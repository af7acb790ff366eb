// Runs the real mini-program in Node: App(), Page(), getApp() and getCurrentPages() as WeChat provides
// them, a page stack with WeChat's navigation rules (tab pages, redirectTo, navigateBack), setData with
// WeChat's path keys, and each page's WXML rendered from its data so that tests read the screen and tap
// what is on it.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { createWx } = require('./wx')
const wxml = require('./wxml')

const MP_ROOT = path.resolve(__dirname, '..', '..', 'miniprogram')

function clone (value) {
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value))
}

// setData keys are paths: "products[2].quantity", "order.status".
function setPath (target, key, value) {
  const parts = []
  key.replace(/[^.[\]]+|\[(\d+)\]/g, (seg, index) => { parts.push(index !== undefined ? Number(index) : seg) })
  let obj = target
  for (let i = 0; i < parts.length - 1; i++) {
    if (obj[parts[i]] === null || typeof obj[parts[i]] !== 'object') obj[parts[i]] = typeof parts[i + 1] === 'number' ? [] : {}
    obj = obj[parts[i]]
  }
  obj[parts[parts.length - 1]] = value
}

function parseUrl (url) {
  const [pathname, search = ''] = String(url).split('?')
  const route = pathname.replace(/^\//, '')
  const query = {}
  for (const pair of search.split('&').filter(Boolean)) {
    const [k, v = ''] = pair.split('=')
    query[k] = v // WeChat hands query values to onLoad still URI-encoded
  }
  return { route, query }
}

function forgetModules () {
  for (const key of Object.keys(require.cache)) {
    if (key.startsWith(MP_ROOT + path.sep)) delete require.cache[key]
  }
}

class PageHandle {
  constructor (mp, instance) {
    this.mp = mp
    this.instance = instance
    this.route = instance.route
  }

  get data () { return this.instance.data }

  tree () {
    return wxml.render(this.mp.template(this.route), this.instance.data)
  }

  // Everything on screen as one string.
  text () {
    return wxml.textOf(this.tree())
  }

  // What the user can tap now: [{ text, handler, dataset, disabled }].
  tappables (event = 'tap') {
    return wxml.targets(this.tree(), event).map(({ text, handler, dataset, disabled }) => ({ text, handler, dataset, disabled }))
  }

  // Tap the element showing `text` (or matching {text, dataset}); the innermost match wins.
  tap (match, event = 'tap', detail = {}) {
    const want = typeof match === 'string' ? { text: match } : match
    const found = wxml.targets(this.tree(), event).filter((t) =>
      (!want.text || t.text.includes(want.text)) &&
      Object.entries(want.dataset || {}).every(([k, v]) => String(t.dataset[k]) === String(v)))
    if (!found.length) {
      const seen = this.tappables(event).map((t) => JSON.stringify(t.text)).join(', ')
      throw new Error(`${this.route}: nothing to ${event} matching ${JSON.stringify(want)}; on screen: ${seen || 'nothing'}\n${this.text()}`)
    }
    const target = found[found.length - 1]
    if (target.disabled) throw new Error(`${this.route}: ${JSON.stringify(target.text)} is disabled`)
    const method = this.instance[target.handler]
    if (typeof method !== 'function') throw new Error(`${this.route}: WXML names handler ${target.handler}, the page has none`)
    const ds = target.dataset
    // The handler's synchronous part runs inside the user's gesture (what wx.requestSubscribeMessage requires).
    this.mp.wx.gesture = true
    try {
      return method.call(this.instance, { type: event, detail, currentTarget: { dataset: ds }, target: { dataset: ds }, timeStamp: Date.now() })
    } finally {
      this.mp.wx.gesture = false
    }
  }
}

async function launch ({ baseUrl, config = {}, wx: wxOptions = {} } = {}) {
  forgetModules()
  const appJson = JSON.parse(fs.readFileSync(path.join(MP_ROOT, 'app.json'), 'utf8'))
  const tabs = new Set(((appJson.tabBar && appJson.tabBar.list) || []).map((t) => t.pagePath))
  const definitions = new Map()
  const templates = new Map()
  const tabInstances = new Map()
  let stack = []
  let appInstance = null
  let loadingRoute = null

  function definition (route) {
    if (!appJson.pages.includes(route)) throw new Error('page "' + route + '" is not in app.json')
    if (!definitions.has(route)) {
      loadingRoute = route
      require(path.join(MP_ROOT, route + '.js'))
      loadingRoute = null
      if (!definitions.has(route)) throw new Error(route + '.js did not call Page()')
    }
    return definitions.get(route)
  }

  function instantiate (route, query) {
    const def = definition(route)
    const page = { route, options: query, __route__: route }
    for (const [k, v] of Object.entries(def)) {
      page[k] = typeof v === 'function' ? v : clone(v)
    }
    page.data = clone(def.data || {})
    page.setData = function setData (patch, callback) {
      for (const [key, value] of Object.entries(patch)) {
        if (value === undefined) throw new Error(`${route}: setData with ${key} undefined (WeChat refuses it)`)
        setPath(page.data, key, clone(value))
      }
      if (callback) setImmediate(callback)
    }
    return page
  }

  function call (page, hook, arg) {
    if (typeof page[hook] === 'function') page[hook](arg)
  }

  function template (route) {
    if (!templates.has(route)) templates.set(route, wxml.parseFile(path.join(MP_ROOT, route + '.wxml')))
    return templates.get(route)
  }

  const opened = [] // { route, query, text }: each page's screen right after onLoad, before any answer came

  function open (route, query) {
    const page = instantiate(route, query)
    stack.push(page)
    call(page, 'onLoad', query)
    opened.push({ route, query, text: wxml.textOf(wxml.render(template(route), page.data)) })
    call(page, 'onShow')
    call(page, 'onReady')
    return page
  }

  function unload (page) {
    call(page, 'onUnload')
    if (tabs.has(page.route)) tabInstances.delete(page.route)
  }

  function hideTop () {
    if (stack.length) call(stack[stack.length - 1], 'onHide')
  }

  const router = {
    navigateTo ({ url }) {
      const { route, query } = parseUrl(url)
      definition(route)
      if (tabs.has(route)) throw new Error('can not navigateTo a tabbar page')
      if (stack.length >= 10) throw new Error('webview count limit exceed')
      hideTop()
      open(route, query)
    },
    redirectTo ({ url }) {
      const { route, query } = parseUrl(url)
      definition(route)
      if (tabs.has(route)) throw new Error('can not redirectTo a tabbar page')
      unload(stack.pop())
      open(route, query)
    },
    switchTab ({ url }) {
      const { route } = parseUrl(url)
      definition(route)
      if (!tabs.has(route)) throw new Error('can not switchTab to a page that is not in the tabBar')
      // Non-tab pages close; tab pages stay alive and are shown again.
      while (stack.length) {
        const page = stack.pop()
        if (tabs.has(page.route)) call(page, 'onHide')
        else unload(page)
      }
      const existing = tabInstances.get(route)
      if (existing) {
        stack = [existing]
        call(existing, 'onShow')
      } else {
        tabInstances.set(route, open(route, {}))
      }
    },
    navigateBack ({ delta = 1 } = {}) {
      if (stack.length <= 1) throw new Error('cannot navigate back at first page')
      for (let i = 0; i < delta && stack.length > 1; i++) unload(stack.pop())
      call(stack[stack.length - 1], 'onShow')
    },
    // Another mini-program opens over this one (WeChat's confirm-receipt page): WeChat hides this one ...
    leaveApp () {
      hideTop()
      call(appInstance, 'onHide')
    },
    // ... and shows it again when that one navigates back, with where it came from in referrerInfo.
    returnToApp (options) {
      call(appInstance, 'onShow', options)
      if (stack.length) call(stack[stack.length - 1], 'onShow')
    },
    reLaunch ({ url }) {
      const { route, query } = parseUrl(url)
      definition(route)
      while (stack.length) unload(stack.pop())
      for (const page of tabInstances.values()) unload(page)
      tabInstances.clear()
      const page = open(route, query)
      if (tabs.has(route)) tabInstances.set(route, page)
    }
  }

  const shim = createWx(Object.assign({ wechatBase: baseUrl, router }, wxOptions))
  global.wx = shim.wx
  global.App = (def) => { appInstance = def }
  global.getApp = () => appInstance
  global.Page = (def) => {
    if (!loadingRoute) throw new Error('Page() called outside a page module')
    definitions.set(loadingRoute, def)
  }
  global.getCurrentPages = () => stack.slice()

  // The base URL lives in one module; the tests point it at their backend, as a developer would.
  const appConfig = require(path.join(MP_ROOT, 'utils', 'config.js'))
  Object.assign(appConfig, { baseUrl, pollIntervalMs: 20 }, config)

  require(path.join(MP_ROOT, 'app.js'))
  if (!appInstance) throw new Error('app.js did not call App()')
  call(appInstance, 'onLaunch', { path: appJson.pages[0], query: {}, scene: 1001 })
  call(appInstance, 'onShow', { path: appJson.pages[0], query: {}, scene: 1001 })
  router.reLaunch({ url: '/' + appJson.pages[0] })

  const mp = {
    wx: shim,
    config: appConfig,
    app: appInstance,
    router,
    opened,
    template,
    get page () {
      return new PageHandle(mp, stack[stack.length - 1])
    },
    // The tab bar is WeChat's own UI, not WXML: tap a tab by its text in app.json.
    tapTab (text) {
      const tab = appJson.tabBar.list.find((t) => t.text === text)
      if (!tab) throw new Error('no tab ' + JSON.stringify(text))
      router.switchTab({ url: '/' + tab.pagePath })
    },
    routes () {
      return stack.map((p) => p.route)
    },
    // Wait until `predicate(mp.page)` holds; on a timeout say what the screen shows.
    async waitFor (predicate, { timeout = 10000, what = 'condition' } = {}) {
      const deadline = Date.now() + timeout
      for (;;) {
        const page = mp.page
        if (predicate(page)) return page
        if (Date.now() > deadline) {
          throw new Error(`timed out waiting for ${what}; on ${page.route} with state ${JSON.stringify(page.data.state)}: ${page.text()}`)
        }
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
    },
    waitForRoute (route, state, options = {}) {
      return mp.waitFor((p) => p.route === route && (state === undefined || p.data.state === state),
        Object.assign({ what: route + (state ? ' in state ' + state : '') }, options))
    },
    // Close every page (their onUnload stops polling) and let requests under way finish.
    async close () {
      while (stack.length) unload(stack.pop())
      for (const page of tabInstances.values()) unload(page)
      tabInstances.clear()
      await shim.idle()
      for (const name of ['wx', 'App', 'getApp', 'Page', 'getCurrentPages']) delete global[name]
    }
  }
  return mp
}

module.exports = { launch, MP_ROOT, parseUrl, setPath }
