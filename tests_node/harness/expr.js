// WXML's {{ }} expressions by WXML's own grammar, parsed and evaluated without JavaScript's eval, so that a template
// WeChat's compiler (wcc) refuses, or renders blank, fails here too instead of passing as JavaScript would.
// Allowed, as WeChat documents (数据绑定 → 运算, 组合): data paths (a.b, a[0], a[key]), string / decimal number /
// true / false / null / undefined literals, arithmetic, comparison, logical and bitwise operators, unary ! - + ~,
// the ternary, parentheses, array literals and object literals (`{ a: x, ...o, b }`). Refused, as wcc refuses them
// (compile.test.js holds the two side by side): calls (`price.toFixed(2)` compiles but renders blank in WeChat; only
// WXS module functions may be called and the harness has no WXS), a member of anything but a path or an array literal
// (`(x / 100).toFixed`, `'abc'.length`), assignment, ++/--, arrow functions and `function`,
// typeof/new/void/delete/in/instanceof, `?.`, `??`, template strings, sequences, trailing commas, hex and exponent
// numbers.
'use strict'

const PUNCTUATORS = ['>>>', '===', '!==', '...', '==', '!=', '<=', '>=', '<<', '>>', '&&', '||', '??', '?.', '=>', '++', '--',
  '+', '-', '*', '/', '%', '<', '>', '!', '~', '&', '|', '^', '?', ':', '.', '[', ']', '(', ')', ',', '{', '}', '=']
const KEYWORDS = { true: true, false: false, null: null, undefined }
const REFUSED_WORDS = new Set(['typeof', 'new', 'void', 'delete', 'function', 'in', 'instanceof', 'this', 'class', 'var', 'let', 'const', 'return', 'yield', 'await'])

// Binary operators by precedence, loosest first (as in JavaScript, which WXML follows).
const BINARY = [['||'], ['&&'], ['|'], ['^'], ['&'], ['==', '!=', '===', '!=='], ['<', '>', '<=', '>='], ['<<', '>>', '>>>'], ['+', '-'], ['*', '/', '%']]

class WxmlExpressionError extends SyntaxError {}

function tokenize (source) {
  const tokens = []
  let i = 0
  while (i < source.length) {
    const ch = source[i]
    if (/\s/.test(ch)) { i++; continue }
    const number = /^(?:\d+(?:\.\d*)?|\.\d+)/.exec(source.slice(i))
    if (number) {
      tokens.push({ type: 'number', value: Number(number[0]), at: i })
      i += number[0].length
      continue
    }
    const word = /^[A-Za-z_$][\w$]*/.exec(source.slice(i))
    if (word) {
      tokens.push({ type: 'word', value: word[0], at: i })
      i += word[0].length
      continue
    }
    if (ch === '"' || ch === "'") {
      let value = ''
      let j = i + 1
      for (; j < source.length && source[j] !== ch; j++) {
        if (source[j] === '\\') {
          j++
          const esc = source[j]
          value += esc === 'n' ? '\n' : esc === 't' ? '\t' : esc === 'r' ? '\r' : esc
        } else {
          value += source[j]
        }
      }
      if (j >= source.length) throw new WxmlExpressionError('unterminated string')
      tokens.push({ type: 'string', value, at: i })
      i = j + 1
      continue
    }
    const punct = PUNCTUATORS.find((p) => source.startsWith(p, i))
    if (!punct) throw new WxmlExpressionError('unexpected `' + ch + '`')
    tokens.push({ type: 'punct', value: punct, at: i })
    i += punct.length
  }
  return tokens
}

function parse (source) {
  const tokens = tokenize(source)
  let pos = 0
  const peek = () => tokens[pos]
  const isPunct = (value) => peek() && peek().type === 'punct' && peek().value === value
  const describe = (t) => (t ? '`' + t.value + '`' : 'the end')

  function refuse (t) {
    if (!t) throw new WxmlExpressionError('unexpected end')
    const v = t.value
    if (v === '(') throw new WxmlExpressionError('a call: WXML calls only WXS module functions; compute the value in the page\'s JS (setData)')
    if (v === '=' || v === '++' || v === '--') throw new WxmlExpressionError('an assignment: WXML expressions change nothing')
    if (v === '=>') throw new WxmlExpressionError('an arrow function: WXML has no functions')
    if (v === '?.' || v === '??' || v === '...') throw new WxmlExpressionError(describe(t) + ' is not WXML')
    if (t.type === 'word' && REFUSED_WORDS.has(v)) throw new WxmlExpressionError('`' + v + '` is not WXML')
    throw new WxmlExpressionError('unexpected ' + describe(t))
  }

  function expect (value) {
    if (!isPunct(value)) refuse(peek())
    pos++
  }

  function ternary () {
    const test = binary(0)
    if (!isPunct('?')) return test
    pos++
    const consequent = ternary()
    expect(':')
    return { type: 'cond', test, consequent, alternate: ternary() }
  }

  function binary (level) {
    if (level === BINARY.length) return unary()
    let left = binary(level + 1)
    while (peek() && peek().type === 'punct' && BINARY[level].includes(peek().value)) {
      const op = tokens[pos++].value
      left = { type: 'binary', op, left, right: binary(level + 1) }
    }
    return left
  }

  function unary () {
    const t = peek()
    if (t && t.type === 'punct' && ['!', '-', '+', '~'].includes(t.value)) {
      pos++
      return { type: 'unary', op: t.value, argument: unary() }
    }
    return postfix()
  }

  // wcc takes members and indexes only after a name or an array literal: `a.b[0]`, `[x, y][i]`.
  function postfix () {
    let node = primary()
    if (node.type !== 'name' && node.type !== 'array') {
      if (isPunct('.') || isPunct('[') || isPunct('(')) refuse(peek())
      return node
    }
    for (;;) {
      if (isPunct('.')) {
        pos++
        const name = peek()
        if (!name || name.type !== 'word') refuse(name)
        pos++
        node = { type: 'member', object: node, property: { type: 'literal', value: name.value } }
      } else if (isPunct('[')) {
        pos++
        const property = ternary()
        expect(']')
        node = { type: 'member', object: node, property }
      } else if (isPunct('(')) {
        refuse(peek())
      } else {
        return node
      }
    }
  }

  function primary () {
    const t = peek()
    if (!t) refuse(t)
    if (t.type === 'number' || t.type === 'string') {
      pos++
      return { type: 'literal', value: t.value }
    }
    if (t.type === 'word') {
      if (REFUSED_WORDS.has(t.value)) refuse(t)
      pos++
      if (Object.prototype.hasOwnProperty.call(KEYWORDS, t.value)) return { type: 'literal', value: KEYWORDS[t.value] }
      return { type: 'name', name: t.value }
    }
    if (isPunct('(')) {
      pos++
      const expression = ternary()
      expect(')')
      return { type: 'group', expression }
    }
    if (isPunct('[')) {
      pos++
      const elements = []
      if (!isPunct(']')) {
        elements.push(ternary())
        while (isPunct(',')) { pos++; elements.push(ternary()) }
      }
      expect(']')
      return { type: 'array', elements }
    }
    if (isPunct('{')) {
      pos++
      const entries = [entry()]
      while (isPunct(',')) { pos++; entries.push(entry()) }
      expect('}')
      return { type: 'object', entries }
    }
    refuse(t)
  }

  // `key: value`, `key` (short for `key: key`) or `...value`; keys are names (wcc refuses quoted keys).
  function entry () {
    if (isPunct('...')) {
      pos++
      return { spread: ternary() }
    }
    const key = peek()
    if (!key || key.type !== 'word') refuse(key)
    pos++
    if (!isPunct(':')) return { key: key.value, value: { type: 'name', name: key.value } }
    pos++
    return { key: key.value, value: ternary() }
  }

  if (!tokens.length) return { type: 'literal', value: undefined } // "{{}}" renders nothing, as in WeChat
  const tree = ternary()
  if (pos < tokens.length) refuse(tokens[pos])
  return tree
}

const OPERATORS = {
  '||': (a, b) => a || b, // both sides are already evaluated: WXML expressions have no side effects
  '&&': (a, b) => a && b,
  '|': (a, b) => a | b,
  '^': (a, b) => a ^ b,
  '&': (a, b) => a & b,
  '==': (a, b) => a == b, // eslint-disable-line eqeqeq
  '!=': (a, b) => a != b, // eslint-disable-line eqeqeq
  '===': (a, b) => a === b,
  '!==': (a, b) => a !== b,
  '<': (a, b) => a < b,
  '>': (a, b) => a > b,
  '<=': (a, b) => a <= b,
  '>=': (a, b) => a >= b,
  '<<': (a, b) => a << b,
  '>>': (a, b) => a >> b,
  '>>>': (a, b) => a >>> b,
  '+': (a, b) => a + b,
  '-': (a, b) => a - b,
  '*': (a, b) => a * b,
  '/': (a, b) => a / b,
  '%': (a, b) => a % b
}

// A path through null or undefined is undefined (WXML renders it blank), never a TypeError.
function evaluate (node, scope) {
  switch (node.type) {
    case 'literal': return node.value
    case 'group': return evaluate(node.expression, scope)
    case 'name': return scope[node.name]
    case 'member': {
      const object = evaluate(node.object, scope)
      if (object === null || object === undefined) return undefined
      return object[evaluate(node.property, scope)]
    }
    case 'array': return node.elements.map((e) => evaluate(e, scope))
    case 'object': {
      const out = {}
      for (const e of node.entries) {
        if (e.spread) Object.assign(out, evaluate(e.spread, scope))
        else out[e.key] = evaluate(e.value, scope)
      }
      return out
    }
    case 'cond': return evaluate(node.test, scope) ? evaluate(node.consequent, scope) : evaluate(node.alternate, scope)
    case 'unary': {
      const v = evaluate(node.argument, scope)
      return node.op === '!' ? !v : node.op === '-' ? -v : node.op === '+' ? +v : ~v
    }
    case 'binary': {
      if (node.op === '&&' || node.op === '||') {
        const left = evaluate(node.left, scope)
        return node.op === '&&' ? (left && evaluate(node.right, scope)) : (left || evaluate(node.right, scope))
      }
      return OPERATORS[node.op](evaluate(node.left, scope), evaluate(node.right, scope))
    }
  }
  throw new Error('unknown node ' + node.type)
}

const cache = new Map()

// Parse once (a template's expressions are checked when it is parsed, as wcc checks them when it compiles).
function compile (source) {
  let tree = cache.get(source)
  if (!tree) {
    try {
      tree = parse(source)
    } catch (err) {
      if (err instanceof WxmlExpressionError) throw new WxmlExpressionError('{{' + source + '}}: ' + err.message)
      throw err
    }
    cache.set(source, tree)
  }
  return tree
}

module.exports = { compile, evaluate, parse, WxmlExpressionError }
