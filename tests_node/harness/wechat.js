// WeChat's own compilers and renderer, as the npm package miniprogram-simulate ships them: miniprogram-compiler wraps
// WeChat's wcc (WXML) and wcsc (WXSS) binaries, which sit inside the package (no download), and miniprogram-simulate
// renders a compiled template through j-component and WeChat's exparser in a jsdom document. The harness's own
// renderer (wxml.js) is checked against these in compile.test.js.
'use strict'
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const vm = require('node:vm')
const { JSDOM } = require('jsdom')

let dom = null

// j-component and exparser need a DOM; one jsdom window serves the whole test file.
function document () {
  if (!dom) {
    dom = new JSDOM('<!doctype html><html><head></head><body></body></html>', { runScripts: 'outside-only', pretendToBeVisual: true })
    global.window = dom.window
    global.document = dom.window.document
    for (const name of ['Element', 'HTMLElement', 'Node', 'Event', 'CustomEvent', 'MutationObserver', 'getComputedStyle']) {
      if (!(name in global)) global[name] = dom.window[name]
    }
  }
  return dom.window.document
}

function compiler () {
  return require('miniprogram-compiler')
}

// Every .wxml (and .wxs) under root through wcc, as one program, the way DevTools compiles a project;
// throws wcc's own message ("pages/x.wxml:3:5: Bad value with message: ...") when a file does not compile.
// The program runs in a context of its own: wcc's code keeps its caches in globals (__WXML_GLOBAL__), which two
// programs in one context would share.
function compileWxml (root) {
  const source = compiler().wxmlToJs(root)
  return vm.runInNewContext('(function () {' + source + '})()', { window: {}, console })
}

// Every .wxss under root through wcsc: { 'pages/x/x.wxss': css, ... } with rpx turned into px for a 375px-wide
// phone, as WeChat does; throws wcsc's message ("ERR: x.wxss(2:4): unexpected `{`") when one does not compile.
function compileWxss (root) {
  const files = []
  const walk = (dir) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name)
      if (entry.isDirectory() && entry.name !== 'node_modules') walk(full)
      else if (entry.name.endsWith('.wxss')) files.push(path.relative(root, full).replace(/\\/g, '/').slice(0, -5))
    }
  }
  walk(root)
  // wcsc answers an Error (it does not throw) when a file is refused; wxssToJs would then lose the message.
  const raw = require('miniprogram-compiler/src/wcsc')(root, files.slice())
  if (raw instanceof Error) throw raw
  const doc = document()
  const window = doc.defaultView
  window.__wxssOf = window.eval('(function () {' + compiler().wxssToJs(root) + '})()')
  const out = {}
  for (const file of files) {
    const rewrite = window.__wxssOf(file + '.wxss')
    if (typeof rewrite !== 'function') throw new Error(file + '.wxss: wcsc produced nothing for it')
    const before = doc.head.querySelectorAll('style').length
    rewrite('')
    const styles = doc.head.querySelectorAll('style')
    out[file + '.wxss'] = Array.from(styles).slice(before).map((s) => s.textContent).join('\n')
  }
  return out
}

// One template through wcc in a directory of its own: null when it compiles, else wcc's message.
function wccRefusal (template) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wcc-'))
  try {
    fs.writeFileSync(path.join(dir, 't.wxml'), template)
    compiler().wxmlToJs(dir)
    return null
  } catch (err) {
    return err.message
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

// A template's text as WeChat renders it with `data`: wcc's generated render function, the virtual tree it builds.
// `warnings` collects what WeChat's runtime prints (e.g. a wx:for without wx:key).
function renderWithWcc (template, data) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wcc-'))
  try {
    fs.writeFileSync(path.join(dir, 't.wxml'), template)
    const gwx = compileWxml(dir)
    return captureWarnings(() => textOfTree(gwx('t.wxml')(data, {}, {})))
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

function textOfTree (node) {
  if (typeof node === 'string') return node
  return (node.children || []).map(textOfTree).join('')
}

function captureWarnings (fn) {
  const warnings = []
  const saved = { warn: console.warn, error: console.error, log: console.log }
  console.warn = console.error = console.log = (...args) => warnings.push(args.join(' '))
  try {
    return { value: fn(), warnings }
  } finally {
    Object.assign(console, saved)
  }
}

let simulate = null

// The pages through miniprogram-simulate with its official compiler (wcc): each page's Page() definition becomes a
// component whose data is the page's; render(route, data) answers what WeChat would draw for that data.
function pageRenderer (root) {
  document()
  if (!simulate) simulate = require('miniprogram-simulate')
  const ids = new Map()
  function load (route) {
    if (!ids.has(route)) {
      const saved = global.Page
      global.Page = (def) => global.Component({ data: def.data || {} })
      delete require.cache[require.resolve(path.join(root, route + '.js'))] // so that its Page() runs again
      try {
        ids.set(route, simulate.load(path.join(root, route), { rootPath: root }))
      } finally {
        global.Page = saved
      }
    }
    return ids.get(route)
  }
  return function render (route, data) {
    const id = load(route)
    return captureWarnings(() => {
      const comp = simulate.render(id)
      comp.attach(global.document.createElement('parent-wrapper'))
      comp.setData(data)
      const out = { text: comp.dom.textContent, html: comp.dom.innerHTML }
      comp.detach()
      return out
    })
  }
}

module.exports = { compileWxml, compileWxss, wccRefusal, renderWithWcc, pageRenderer }
