// The mini-program as WeChat compiles it: every WXML file through WeChat's wcc and every WXSS file through its wcsc
// (the binaries miniprogram-simulate ships, via miniprogram-compiler), every page state rendered once by
// miniprogram-simulate with that compiler and by the harness, which must agree; and the harness's template checks
// held against wcc itself, so that a Node test cannot pass on a template WeChat refuses or renders blank.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { test } = require('node:test')
const assert = require('node:assert/strict')
const wxml = require('./harness/wxml')
const wechat = require('./harness/wechat')
const { MP_ROOT } = require('./harness/miniprogram')
const { STATES } = require('./page-states')

const app = JSON.parse(fs.readFileSync(path.join(MP_ROOT, 'app.json'), 'utf8'))

function filesUnder (dir, ext) {
  const out = []
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name)
    if (entry.isDirectory()) out.push(...filesUnder(full, ext))
    else if (full.endsWith(ext)) out.push(path.relative(MP_ROOT, full).replace(/\\/g, '/'))
  }
  return out
}

// A page's initial data, from its own Page() call.
function initialData (route) {
  let def = null
  const saved = { Page: global.Page, getApp: global.getApp }
  global.Page = (d) => { def = d }
  global.getApp = () => ({ globalData: {} })
  try {
    const file = path.join(MP_ROOT, route + '.js')
    delete require.cache[file]
    require(file)
  } finally {
    Object.assign(global, saved)
  }
  return JSON.parse(JSON.stringify(def.data || {}))
}

const squash = (s) => s.replace(/\s+/g, '')

test('every WXML file compiles with WeChat\'s wcc, and every page is in the compiled program', () => {
  const gwx = wechat.compileWxml(MP_ROOT)
  const files = filesUnder(MP_ROOT, '.wxml')
  assert.ok(files.length >= app.pages.length)
  for (const file of files) assert.equal(typeof gwx(file), 'function', file + ' compiled')
  for (const route of app.pages) assert.ok(files.includes(route + '.wxml'), route)
})

test('every WXSS file compiles with WeChat\'s wcsc into CSS with each of its classes and rpx as px', () => {
  const css = wechat.compileWxss(MP_ROOT)
  const files = filesUnder(MP_ROOT, '.wxss')
  assert.deepEqual(Object.keys(css).sort(), files.sort())
  for (const file of files) {
    const source = fs.readFileSync(path.join(MP_ROOT, file), 'utf8').replace(/\/\*[\s\S]*?\*\//g, '')
    const classes = new Set(Array.from(source.matchAll(/\.([A-Za-z][\w-]*)/g), (m) => m[1]))
    assert.ok(classes.size > 0, file + ' has rules')
    for (const name of classes) assert.ok(css[file].includes('.' + name), `${file}: .${name} is in wcsc's output`)
    // 24rpx on a 375px-wide phone is 12px: wcsc's rpx rule ran.
    if (/\b24rpx\b/.test(source)) assert.match(css[file], /\b12px\b/, file)
  }
})

test('each page state renders the same text with WeChat\'s compiler (miniprogram-simulate) as with the harness', () => {
  const render = wechat.pageRenderer(MP_ROOT)
  let count = 0
  for (const route of app.pages) {
    const tree = wxml.parseFile(path.join(MP_ROOT, route + '.wxml'))
    for (const state of STATES[route]) {
      const data = Object.assign(initialData(route), state.data)
      const where = `${route} (${state.name})`
      const official = render(route, data)
      assert.deepEqual(official.warnings, [], where + ': WeChat\'s runtime warned')
      const ours = wxml.textOf(wxml.render(tree, data))
      assert.ok(squash(official.value.text).length > 0, where + ' draws something')
      assert.equal(squash(ours), squash(official.value.text), where + ': the harness and WeChat disagree')
      count++
    }
  }
  assert.ok(count >= 30, count + ' states')
})

test('every state a page names is among the rendered states', () => {
  for (const route of app.pages) {
    const template = fs.readFileSync(path.join(MP_ROOT, route + '.wxml'), 'utf8')
    const script = fs.readFileSync(path.join(MP_ROOT, route + '.js'), 'utf8')
    const named = new Set(Array.from(template.matchAll(/\b(state|phone) === '(\w+)'/g), (m) => m[1] + ':' + m[2]))
    // The states the page's data comment lists: `state: 'loading', // loading | ready | error`.
    const comment = /\bstate: '\w+', \/\/ ([\w |]+)/.exec(script)
    assert.ok(comment, route + ' lists its states next to its data')
    for (const s of comment[1].split('|')) named.add('state:' + s.trim())
    const rendered = new Set()
    const initial = initialData(route)
    for (const state of STATES[route]) {
      const data = Object.assign({}, initial, state.data)
      for (const key of ['state', 'phone']) if (data[key] !== undefined) rendered.add(key + ':' + data[key])
    }
    for (const name of named) assert.ok(rendered.has(name), `${route}: no rendered state has ${name}`)
  }
})

// Each template: what wcc says (compiles or not; for some, the text its render function draws) and what the harness does.
const REFUSED_BY_BOTH = [
  '<text>{{(price / 100).toFixed(2)}}</text>',
  '<text>{{a = 1}}</text>',
  '<text>{{n++}}</text>',
  '<text>{{list.map(x => x.name)}}</text>',
  '<text>{{typeof a}}</text>',
  '<text>{{new Date()}}</text>',
  '<text>{{a?.b}}</text>',
  '<text>{{a ?? b}}</text>',
  '<text>{{a, b}}</text>',
  '<text>{{...a}}</text>',
  '<text>{{ (o).k }}</text>',
  '<text>{{\'abc\'.length}}</text>',
  '<text>{{ {a: 1}.a }}</text>',
  '<text>{{ {"a": 1} }}</text>',
  '<text>{{[1, 2, ]}}</text>',
  '<text>{{1e3}}</text>',
  '<text>{{a in b}}</text>',
  '<view wx:else>stray</view>',
  '<view wx:if="{{a}}">1</view><view wx:else>2</view><view wx:elif="{{b}}">3</view>',
  '<view wx:if="{{a}}">1</view> text <view wx:else>2</view>',
  '<view wx:for="{{list}}" wx:key="id">1</view><view wx:else>2</view>',
  '<view wx:if="{{a}}" wx:else>1</view>'
]

const ACCEPTED_BY_BOTH = [
  ['<text>{{a.b[0].c}} {{a.b[key].c}}</text>', { a: { b: [{ c: 'x' }] }, key: 0 }, 'x x'],
  ['<text>{{n > 1 ? \'many\' : \'one\'}}/{{n % 2 === 0}}/{{-n + 10 * 2}}</text>', { n: 3 }, 'many/false/17'],
  ['<text>{{"¥" + yuan}} {{!a && b || c}}</text>', { yuan: '1.50', b: 'b', c: 'c' }, '¥1.50 b'],
  ['<text>{{ {a: x, ...o, b} }}|{{(1 + 2) * 3}}</text>', { x: 1, o: {}, b: 2 }, '[object Object]|9'],
  ['<text>{{[1, x][1]}}|{{missing.path.deep}}|{{nothing}}|{{zero}}</text>', { x: 'two', zero: 0 }, 'two|||0'],
  ['<view wx:if="{{n > 1}}">many</view><!-- a comment --><view wx:elif="{{n === 1}}">one</view>\n<view wx:else>none</view>', { n: 1 }, 'one'],
  ['<view wx:for="{{list}}" wx:key="id" wx:for-item="p" wx:for-index="i">{{i}}:{{p.name}};</view>', { list: [{ id: 1, name: 'a' }, { id: 2, name: 'b' }] }, '0:a;1:b;']
]

test('the harness refuses the templates WeChat\'s compiler refuses, and draws the ones it accepts as it does', () => {
  for (const template of REFUSED_BY_BOTH) {
    assert.ok(wechat.wccRefusal(template), 'wcc refuses ' + template)
    assert.throws(() => wxml.parse(template), Error, 'the harness refuses ' + template)
  }
  for (const [template, data, text] of ACCEPTED_BY_BOTH) {
    const official = wechat.renderWithWcc(template, data)
    assert.deepEqual(official.warnings, [], template)
    assert.equal(squash(official.value), squash(text), 'wcc draws ' + template)
    assert.equal(squash(wxml.textOf(wxml.render(wxml.parse(template), data))), squash(text), 'the harness draws ' + template)
  }
})

test('what wcc compiles but WeChat draws blank or warns about, the harness refuses outright', () => {
  // A method call on data compiles (WXS calls share its syntax) but draws nothing in WeChat.
  const call = '<text>[{{price.toFixed(2)}}]</text>'
  assert.equal(wechat.wccRefusal(call), null)
  assert.equal(wechat.renderWithWcc(call, { price: 1.5 }).value, '[]')
  assert.throws(() => wxml.parse(call), /a call: WXML calls only WXS module functions/)

  // A list without wx:key: WeChat's runtime warns; the harness will not render it.
  const unkeyed = '<view wx:for="{{list}}">{{item}}</view>'
  assert.equal(wechat.wccRefusal(unkeyed), null)
  assert.match(wechat.renderWithWcc(unkeyed, { list: [1] }).warnings.join('\n'), /provide attr `wx:key`/)
  assert.throws(() => wxml.parse(unkeyed), /wx:for without wx:key/)
})
