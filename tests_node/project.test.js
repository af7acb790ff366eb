// The mini-program as WeChat DevTools imports it: valid project files, every page four files of one name,
// templates that parse and name only handlers the page has, one place for the base URL; and the pure helpers.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { test } = require('node:test')
const assert = require('node:assert/strict')
const wxml = require('./harness/wxml')
const { MP_ROOT } = require('./harness/miniprogram')

function json (file) {
  return JSON.parse(fs.readFileSync(path.join(MP_ROOT, file), 'utf8'))
}

function files (dir, ext) {
  const out = []
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name)
    if (entry.isDirectory()) out.push(...files(full, ext))
    else if (full.endsWith(ext)) out.push(full)
  }
  return out
}

// Load a page module with a Page() that only records the definition.
function pageDefinition (route) {
  let def = null
  const saved = { Page: global.Page, getApp: global.getApp, wx: global.wx }
  global.Page = (d) => { def = d }
  global.getApp = () => ({ globalData: {} })
  try {
    const file = path.join(MP_ROOT, route + '.js')
    delete require.cache[file]
    require(file)
  } finally {
    Object.assign(global, saved)
  }
  return def
}

test('project.config.json, app.json and sitemap.json are what DevTools expects', () => {
  const project = json('project.config.json')
  assert.equal(project.compileType, 'miniprogram')
  assert.ok(project.appid, 'an appid (touristappid until you set yours)')
  const app = json('app.json')
  assert.equal(app.sitemapLocation, 'sitemap.json')
  assert.ok(Array.isArray(json('sitemap.json').rules))
  assert.deepEqual(app.pages, ['pages/products/products', 'pages/checkout/checkout', 'pages/result/result',
    'pages/orders/orders', 'pages/order-detail/order-detail'])
  for (const tab of app.tabBar.list) assert.ok(app.pages.includes(tab.pagePath), tab.pagePath + ' is a page')
  for (const file of ['app.js', 'app.wxss']) assert.ok(fs.existsSync(path.join(MP_ROOT, file)), file)
})

test('DevTools\' code-quality settings: components injected on demand, JS, WXML and WXSS minified on upload', () => {
  const app = json('app.json')
  assert.equal(app.lazyCodeLoading, 'requiredComponents')
  const setting = json('project.config.json').setting
  for (const key of ['minified', 'minifyWXML', 'minifyWXSS', 'ignoreUploadUnusedFiles']) assert.equal(setting[key], true, key)
})

// WeChat's list of APIs and components that handle personal information (用户隐私保护指引内容介绍), those a shop
// like this one could plausibly reach for; each one the pages use must be declared (utils/privacy.js, README).
const PRIVACY_APIS = {
  setClipboardData: /wx\.setClipboardData\b/,
  getClipboardData: /wx\.getClipboardData\b/,
  getPhoneNumber: /open-type="[^"]*\bgetPhoneNumber\b/,
  getRealtimePhoneNumber: /open-type="[^"]*\bgetRealtimePhoneNumber\b/,
  chooseAvatar: /open-type="[^"]*\bchooseAvatar\b/,
  nickname: /type="nickname"/,
  chooseAddress: /wx\.chooseAddress\b/,
  getLocation: /wx\.(getLocation|getFuzzyLocation|chooseLocation|choosePoi)\b/,
  chooseMedia: /wx\.(chooseImage|chooseMedia|chooseVideo|chooseMessageFile)\b/,
  saveToAlbum: /wx\.(saveImageToPhotosAlbum|saveVideoToPhotosAlbum)\b/,
  chooseInvoice: /wx\.(chooseInvoice|chooseInvoiceTitle)\b/,
  addPhoneContact: /wx\.addPhoneContact\b/
}

test('the privacy-sensitive APIs the pages use are exactly the declared ones, with the privacy check on', () => {
  assert.equal(json('app.json').__usePrivacyCheck__, true)
  const privacy = require(path.join(MP_ROOT, 'utils', 'privacy.js'))
  const sources = files(MP_ROOT, '.js').concat(files(MP_ROOT, '.wxml'))
    .filter((f) => !f.endsWith(path.join('utils', 'privacy.js')))
    .map((f) => fs.readFileSync(f, 'utf8')).join('\n')
  const used = Object.keys(PRIVACY_APIS).filter((api) => PRIVACY_APIS[api].test(sources))
  assert.deepEqual(used.sort(), Object.keys(privacy.DECLARED).sort(), 'used = declared in utils/privacy.js')
  const readme = fs.readFileSync(path.join(MP_ROOT, '..', 'README.md'), 'utf8')
  for (const [api, label] of Object.entries(privacy.DECLARED)) {
    assert.ok(readme.includes(api) && readme.includes(label), `README's privacy section names ${api} (${label})`)
  }
  assert.match(privacy.refusalMessage('复制', { errno: 112 }), /未在《用户隐私保护指引》中声明/)
  assert.match(privacy.refusalMessage('复制', { errno: 104 }), /未同意《用户隐私保护指引》/)
  assert.match(privacy.refusalMessage('获取手机号', { errno: 1400001 }), /额度已用完/)
  assert.equal(privacy.refusalMessage('复制', { errMsg: 'setClipboardData:fail' }), '复制失败，请稍后重试')
})

test('every page is four files of one name; its JSON parses and its template names only handlers it has', () => {
  for (const route of json('app.json').pages) {
    for (const ext of ['.js', '.json', '.wxml', '.wxss']) {
      assert.ok(fs.existsSync(path.join(MP_ROOT, route + ext)), route + ext)
    }
    const config = json(route + '.json')
    assert.match(config.navigationBarTitleText, /[\u4e00-\u9fff]/, route + ' has a Chinese title')
    const tree = wxml.parseFile(path.join(MP_ROOT, route + '.wxml'))
    const def = pageDefinition(route)
    assert.ok(def, route + ' calls Page()')
    for (const name of wxml.handlerNames(tree)) {
      assert.equal(typeof def[name], 'function', `${route}.wxml names ${name}, which ${route}.js lacks`)
    }
    // Each page draws its loading and error states (the result page's "waiting" is its loading state).
    const source = fs.readFileSync(path.join(MP_ROOT, route + '.wxml'), 'utf8')
    assert.match(source, /state === '(loading|waiting)'/, route + ' has a loading state')
    assert.match(source, /class="state state-error"/, route + ' has an error state')
  }
})

test('the template parser refuses what WXML refuses', () => {
  assert.throws(() => wxml.parse('<view><text>a</view>'), /closes <text>/)
  assert.throws(() => wxml.parse('<text>{{price.toFixed(2)}}</text>'), /a call: WXML calls only WXS module functions/)
  assert.throws(() => wxml.parse('<text>{{(fen / 100).toFixed(2)}}</text>'), /unexpected `\.`/)
  assert.throws(() => wxml.parse('<view wx:if="{{a}}"></view><text>b</text><view wx:else></view>'), /stray wx:else/)
  assert.throws(() => wxml.parse('<view wx:for="{{list}}">{{item}}</view>'), /wx:for without wx:key/)
  assert.throws(() => wxml.parse('<view>'), /never closed/)
  assert.throws(() => wxml.parse('<view wx:if="{{a}}" wx:for="{{b}}" wx:key="id"></view>'), /wx:if and wx:for/)
  assert.throws(() => wxml.parse('<text>{{a</text>'), /unbalanced/)
  const tree = wxml.parse('<view wx:if="{{n > 1}}">many</view><view wx:elif="{{n === 1}}">one</view><view wx:else>none</view>' +
    '<text wx:for="{{list}}" wx:key="*this">{{index}}:{{item}} </text>')
  assert.equal(wxml.textOf(wxml.render(tree, { n: 1, list: ['a', 'b'] })), 'one 0:a 1:b')
  assert.equal(wxml.textOf(wxml.render(tree, { n: 0, list: [] })), 'none')
})

test('WXSS braces balance', () => {
  for (const file of files(MP_ROOT, '.wxss')) {
    const css = fs.readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '')
    let depth = 0
    for (const ch of css) {
      depth += ch === '{' ? 1 : ch === '}' ? -1 : 0
      assert.ok(depth >= 0, file)
    }
    assert.equal(depth, 0, file)
  }
})

test('the backend\'s address is written in one place, utils/config.js', () => {
  const config = require(path.join(MP_ROOT, 'utils', 'config.js'))
  assert.match(config.baseUrl, /^https?:\/\//)
  for (const file of files(MP_ROOT, '.js').concat(files(MP_ROOT, '.wxml'))) {
    if (file.endsWith(path.join('utils', 'config.js'))) continue
    const source = fs.readFileSync(file, 'utf8')
    assert.doesNotMatch(source, /https?:\/\//, path.relative(MP_ROOT, file) + ' holds a URL')
  }
})

test('format: fen as yuan, the cart as ids and quantities', () => {
  const format = require(path.join(MP_ROOT, 'utils', 'format.js'))
  assert.equal(format.yuan(1), '¥0.01')
  assert.equal(format.yuan(1800), '¥18.00')
  assert.equal(format.yuan(123456), '¥1234.56')
  assert.equal(format.yuan(-50), '-¥0.50')
  assert.equal(format.encodeCart([{ product_id: 1, quantity: 2 }, { product_id: 3, quantity: 1 }]), '1:2,3:1')
  assert.deepEqual(format.decodeCart('1:2,3:1'), [{ product_id: 1, quantity: 2 }, { product_id: 3, quantity: 1 }])
  for (const bad of ['', '1:0', '1:100', '1:2,x', '1:2:3', '1:-1']) assert.deepEqual(format.decodeCart(bad), [], bad)
  assert.equal(format.status('paid').text, '已支付')
  assert.equal(format.status('shipped').text, '已发货')
  assert.equal(format.status('completed').text, '已完成')
  const express = (code) => format.shipment({ logistics_type: 'express', express_company: code, tracking_no: 'T1', item_desc: '' }, 0)
  assert.equal(express('SF').company, '顺丰速运')
  assert.equal(express('ZTO').company, '中通快递')
  assert.equal(express('NEWCO').company, 'NEWCO', 'a code the table lacks is shown as it is')
  assert.equal(format.shipment({ logistics_type: 'express', express_company: 'SF', express_company_name: '顺丰', tracking_no: 'T1' }, 0).company, '顺丰')
  assert.deepEqual(format.shipment({ logistics_type: 'pickup', express_company: null, tracking_no: null, item_desc: null }, 2),
    { key: 2, express: false, typeText: '到店自提', company: '', trackingNo: '', itemDesc: '' })
  const shippedOrder = { out_trade_no: 'N', status: 'shipped', confirm_receipt: { transaction_id: '42' }, items: [] }
  assert.deepEqual(format.order(shippedOrder).confirmReceipt, { transaction_id: '42' })
  assert.equal(format.order(Object.assign({}, shippedOrder, { status: 'completed' })).confirmReceipt, null, 'only while shipped')
  assert.equal(format.time('not a time'), '')
})

test('errors: the contract\'s shape becomes a readable message; wx fail callbacks too', () => {
  const errors = require(path.join(MP_ROOT, 'utils', 'errors.js'))
  const e = errors.fromResponse({ statusCode: 409, data: { error: { code: 'order_closed', message: 'this order is closed' } } })
  assert.equal(e.status, 409)
  assert.equal(e.code, 'order_closed')
  assert.equal(e.message, '订单已关闭，请重新下单')
  assert.equal(e.detail, 'this order is closed')
  assert.equal(errors.fromResponse({ statusCode: 502, data: '<html>bad gateway</html>' }).message, '微信支付暂时不可用，请稍后重试')
  assert.equal(errors.fromResponse({ statusCode: 500, data: {} }).code, 'http_500')
  assert.equal(errors.fromRequestFail({ errMsg: 'request:fail timeout' }).code, 'timeout')
  assert.equal(errors.fromRequestFail({ errMsg: 'request:fail ECONNREFUSED' }).message, '网络连接失败，请检查网络后重试')
  assert.equal(errors.fromPaymentFail({ errMsg: 'requestPayment:fail cancel' }).code, 'pay_cancelled')
  assert.equal(errors.userMessage(new TypeError('x is undefined')), '出了点问题，请稍后重试')
})
