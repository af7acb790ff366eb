// Just enough WXML for the tests: parse a page's template strictly (every tag closed, in order; WXML's expression
// grammar, not JavaScript's; no stray wx:elif/wx:else; no wx:for without wx:key), render it against the page's data
// (wx:if/elif/else, wx:for, hidden, {{ }}), and find what a user could tap. It knows none of WeChat's layout; it
// answers "what text is on screen, and what is tappable". compile.test.js checks it against WeChat's own compiler.
'use strict'
const fs = require('node:fs')
const expr = require('./expr')

const TOKEN = /<!--[\s\S]*?-->|<\/([A-Za-z][\w-]*)\s*>|<([A-Za-z][\w-]*)((?:\s+[^\s=>/]+(?:\s*=\s*(?:"[^"]*"|'[^']*'))?)*)\s*(\/?)>|([^<]+)|(<)/g
const ATTR = /([^\s=>/]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'))?/g

function parse (source, file = 'template') {
  const root = { tag: '#root', attrs: {}, children: [] }
  const stack = [root]
  let m
  TOKEN.lastIndex = 0
  while ((m = TOKEN.exec(source))) {
    const line = source.slice(0, m.index).split('\n').length
    const top = stack[stack.length - 1]
    if (m[6]) throw new Error(`${file}:${line}: stray "<"`)
    if (m[1]) {
      if (top.tag !== m[1]) throw new Error(`${file}:${line}: </${m[1]}> closes <${top.tag}>`)
      stack.pop()
    } else if (m[2]) {
      const attrs = {}
      let a
      ATTR.lastIndex = 0
      while ((a = ATTR.exec(m[3] || ''))) {
        if (a[1] in attrs) throw new Error(`${file}:${line}: attribute ${a[1]} twice on <${m[2]}>`)
        attrs[a[1]] = a[2] !== undefined ? a[2] : a[3] !== undefined ? a[3] : true
      }
      const node = { tag: m[2], attrs, children: [], line }
      const where = `${file}:${line}: <${m[2]}>`
      if ('wx:if' in attrs && 'wx:for' in attrs) throw new Error(`${where} wx:if and wx:for on one element; wrap one in <block>`)
      if ('wx:for' in attrs && !('wx:key' in attrs)) throw new Error(`${where} wx:for without wx:key`)
      const branch = ['wx:if', 'wx:elif', 'wx:else'].filter((k) => k in attrs)
      if (branch.length > 1) throw new Error(`${where} ${branch.join(' and ')} on one element`)
      if (branch[0] === 'wx:elif' || branch[0] === 'wx:else') {
        // Only whitespace and comments may stand between the branches (wcc: "wx:if not found").
        const before = top.children[top.children.length - 1]
        if (!before || before.tag === '#text' || !('wx:if' in before.attrs || 'wx:elif' in before.attrs)) {
          throw new Error(`${where} stray ${branch[0]}: it must follow an element with wx:if or wx:elif`)
        }
      }
      for (const [k, v] of Object.entries(attrs)) {
        if (typeof v === 'string') checkExpressions(v, `${where} ${k}`)
      }
      top.children.push(node)
      if (!m[4]) stack.push(node)
    } else if (m[5] !== undefined && m[5].trim()) {
      if (m[5].split('{{').length !== m[5].split('}}').length) throw new Error(`${file}:${line}: unbalanced {{ }}`)
      checkExpressions(m[5], `${file}:${line}: text`)
      top.children.push({ tag: '#text', text: m[5] })
    }
  }
  if (stack.length !== 1) throw new Error(`${file}: <${stack[stack.length - 1].tag}> (line ${stack[stack.length - 1].line}) is never closed`)
  return root
}

const MUSTACHE = /\{\{([\s\S]*?)\}\}/g

// Every {{ }} in a text or an attribute is parsed when the template is, as wcc compiles them all.
function checkExpressions (value, where) {
  for (const [, source] of value.matchAll(MUSTACHE)) {
    try {
      expr.compile(source)
    } catch (err) {
      throw new Error(`${where}: ${err.message}`)
    }
  }
}

function evaluate (source, scope) {
  return expr.evaluate(expr.compile(source), scope)
}

// As WeChat shows a value inside text: undefined is blank, anything else as String() writes it (null is "null").
function asText (v) {
  return v === undefined ? '' : String(v)
}

// "{{x}}" gives x itself; "a {{x}} b" gives a string.
function interpolate (value, scope) {
  if (value === true) return true
  const whole = /^\s*\{\{((?:(?!\}\})[\s\S])*)\}\}\s*$/.exec(value)
  if (whole) return evaluate(whole[1], scope)
  return value.replace(MUSTACHE, (_, source) => asText(evaluate(source, scope)))
}

function dataset (attrs) {
  const out = {}
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('data-')) out[k.slice(5).replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = v
  }
  return out
}

function renderChildren (children, scope, out) {
  let chainOpen = false // an earlier wx:if/wx:elif in this run of siblings was true
  for (const node of children) {
    const a = node.attrs || {}
    if ('wx:if' in a) {
      chainOpen = !!interpolate(a['wx:if'], scope)
      if (!chainOpen) continue
    } else if ('wx:elif' in a) {
      if (chainOpen) continue
      chainOpen = !!interpolate(a['wx:elif'], scope)
      if (!chainOpen) continue
    } else if ('wx:else' in a) {
      if (chainOpen) continue
    } else {
      chainOpen = false
    }
    if ('wx:for' in a) {
      let list = interpolate(a['wx:for'], scope)
      if (typeof list === 'number') list = Array.from({ length: list }, (_, i) => i)
      const entries = Array.isArray(list) ? list.map((v, i) => [i, v]) : Object.entries(list || {})
      for (const [index, item] of entries) {
        const inner = Object.create(scope)
        inner[a['wx:for-item'] || 'item'] = item
        inner[a['wx:for-index'] || 'index'] = index
        renderNode(node, inner, out)
      }
    } else {
      renderNode(node, scope, out)
    }
  }
}

function renderNode (node, scope, out) {
  if (node.tag === '#text') {
    const text = node.text.replace(MUSTACHE, (_, source) => asText(evaluate(source, scope)))
    out.push({ tag: '#text', text: text.replace(/\s+/g, ' ').trim() })
    return
  }
  const attrs = {}
  for (const [k, v] of Object.entries(node.attrs)) {
    if (k.startsWith('wx:')) continue
    attrs[k] = interpolate(v, scope)
  }
  if (attrs.hidden && attrs.hidden !== 'false') return
  const children = []
  renderChildren(node.children, scope, children)
  if (node.tag === 'block') {
    out.push(...children)
    return
  }
  out.push({ tag: node.tag, attrs, dataset: dataset(attrs), children })
}

function render (tree, data) {
  const out = []
  renderChildren(tree.children, Object.assign(Object.create(null), data), out)
  return { tag: '#root', attrs: {}, dataset: {}, children: out }
}

function textOf (node) {
  if (node.tag === '#text') return node.text
  return node.children.map(textOf).filter(Boolean).join(' ')
}

function walk (node, visit, parents = []) {
  visit(node, parents)
  for (const child of node.children || []) walk(child, visit, parents.concat([node]))
}

// Elements a user could fire `event` on ("tap", "getphonenumber"): those with bind<event> or catch<event>,
// or inside one (a tap on a text bubbles up to the nearest handler).
function handlerOf (node, event) {
  const a = node.attrs || {}
  return a['bind' + event] || a['catch' + event] || a['bind:' + event] || a['catch:' + event] || null
}

function targets (tree, event) {
  const found = []
  walk(tree, (node) => {
    const handler = node.tag !== '#text' && handlerOf(node, event)
    if (handler) {
      const disabled = node.attrs.disabled === true || (node.attrs.disabled && node.attrs.disabled !== 'false')
      found.push({ node, handler, text: textOf(node), dataset: node.dataset, disabled: !!disabled })
    }
  })
  return found
}

// Every handler name a template mentions, rendered or not.
function handlerNames (tree) {
  const names = new Set()
  walk(tree, (node) => {
    for (const [k, v] of Object.entries(node.attrs || {})) {
      if (/^(bind|catch)/.test(k) && typeof v === 'string') names.add(v)
    }
  })
  return names
}

function parseFile (file) {
  return parse(fs.readFileSync(file, 'utf8'), file)
}

module.exports = { parse, parseFile, render, textOf, targets, handlerNames }
