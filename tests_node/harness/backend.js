// A real backend for the tests: gunicorn on a free loopback port, sandbox mode, a throwaway
// SQLite database and embedded store, the demo products. Python tools come from $MINIAPP_PY_BIN
// (the Makefile passes its venv's bin) or ./.venv/bin.
'use strict'
const { spawn, execFile } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { promisify } = require('node:util')

const ROOT = path.resolve(__dirname, '..', '..')
const BIN = path.resolve(ROOT, process.env.MINIAPP_PY_BIN || path.join('.venv', 'bin'))

function freePort () {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

function backendEnv (dir) {
  const env = {}
  for (const [key, value] of Object.entries(process.env)) {
    // Never the caller's database, Redis or WeChat settings: this backend is sandboxed and throwaway.
    // Only the WeChat Pay API passes (WECHAT_PAY_API=v3 make test runs the journey on v3).
    if (/^(DATABASE_URL|REDIS_URL|APP_ENV|GUNICORN_BIND|WECHAT_(?!PAY_API$).*)$/.test(key)) continue
    env[key] = value
  }
  return Object.assign(env, {
    FLASK_APP: 'wsgi:app',
    APP_ENV: 'development',
    SECRET_KEY: 'node-tests-secret',
    DATABASE_URL: 'sqlite:///' + path.join(dir, 't.db'),
    EMBEDDED_STORE_PATH: path.join(dir, 's.db'),
    SANDBOX_TIME_SCALE: '0.001',
    WEB_CONCURRENCY: '2', // two processes: a token revoked in one must be refused by the other
    GUNICORN_THREADS: '4',
    GUNICORN_ACCESS_LOG: '-',
    PYTHONUNBUFFERED: '1'
  })
}

async function waitHealthy (url, child, logs) {
  const deadline = Date.now() + 30000
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error('backend exited early:\n' + logs.join(''))
    try {
      const res = await fetch(url + '/healthz')
      if (res.ok) return res.json()
    } catch (err) {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw new Error('backend did not become healthy:\n' + logs.join(''))
}

async function startBackend () {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'miniapp-node-'))
  const env = backendEnv(dir)
  const run = promisify(execFile)
  await run(path.join(BIN, 'flask'), ['db', 'upgrade'], { cwd: ROOT, env })
  await run(path.join(BIN, 'flask'), ['products', 'demo'], { cwd: ROOT, env })
  const port = await freePort()
  const url = 'http://127.0.0.1:' + port
  const logs = []
  const child = spawn(path.join(BIN, 'gunicorn'), ['-c', 'gunicorn.conf.py', '--bind', '127.0.0.1:' + port, 'wsgi:app'],
    { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  child.stdout.on('data', (chunk) => logs.push(chunk.toString()))
  child.stderr.on('data', (chunk) => logs.push(chunk.toString()))
  const exited = new Promise((resolve) => child.once('exit', resolve))
  // If the test process dies before after() runs, take the server down with it.
  const orphanGuard = () => { if (child.exitCode === null) child.kill('SIGKILL') }
  process.once('exit', orphanGuard)
  let health
  try {
    health = await waitHealthy(url, child, logs)
  } catch (err) {
    child.kill('SIGKILL')
    fs.rmSync(dir, { recursive: true, force: true })
    throw err
  }

  async function stop () {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 10000)
      await exited
      clearTimeout(timer)
    }
    process.removeListener('exit', orphanGuard)
    fs.rmSync(dir, { recursive: true, force: true })
  }

  // A call straight to the backend, behind the mini-program's back (as another device or an operator would).
  async function api (method, urlPath, { token, body } = {}) {
    const headers = { 'content-type': 'application/json' }
    if (token) headers.authorization = 'Bearer ' + token
    const res = await fetch(url + urlPath, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
    const text = await res.text()
    let data = text
    try { data = JSON.parse(text) } catch (err) { /* not JSON */ }
    return { status: res.status, data, headers: res.headers }
  }

  // An operator at the backend's own command line (`flask orders ship ...`), on the same database and store.
  // Resolves with { code, stdout, stderr, json } whatever the exit code (the CLI's 0 done, 1 refused, 3 WeChat failed).
  function flask (args) {
    return new Promise((resolve) => {
      execFile(path.join(BIN, 'flask'), args, { cwd: ROOT, env, timeout: 60000 }, (err, stdout, stderr) => {
        let json
        try { json = JSON.parse(stdout) } catch (e) { /* not --json */ }
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr, json })
      })
    })
  }

  return { url, health, stop, api, flask, logs, dir }
}

module.exports = { startBackend, freePort }
