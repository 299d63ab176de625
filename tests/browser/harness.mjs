// Test harness for the browser tests: a fresh database, a migrated schema, users signed
// up through SQL in PostgREST's context, a real `pgchat serve` serving ../../frontend,
// and headless Chromium driven by playwright-core.
//
// Everything it starts it stops: the pgchat processes it spawned (by PID), the browser,
// and the database, which is dropped at the end.
import { spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const SCREENSHOTS = join(REPO, 'target', 'screenshots');
const LOGS = join(REPO, 'target', 'browser-logs');
const JWT_SECRET = 'pgchat-browser-test-secret-0123456789-abcdef';
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** Runs psql with `sql` on `url`; returns trimmed stdout lines. Throws on any error. */
export function psql(url, sql) {
  const r = spawnSync('psql', ['-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', url], {
    input: sql, encoding: 'utf8', timeout: 30_000,
  });
  if (r.status !== 0) throw new Error(`psql failed (${r.status}): ${r.stderr || r.error}`);
  return r.stdout.split('\n').map((l) => l.trim()).filter(Boolean);
}

const quoteLiteral = (s) => "'" + String(s).replace(/'/g, "''") + "'";

/** The pgchat binary: $PGCHAT_BIN, else `cargo build` output (honours CARGO_TARGET_DIR). */
function pgchatBinary() {
  if (process.env.PGCHAT_BIN) return process.env.PGCHAT_BIN;
  const build = spawnSync('cargo', ['build', '--quiet', '--bin', 'pgchat'], {
    cwd: REPO, stdio: 'inherit', timeout: 30 * 60_000,
  });
  if (build.status !== 0) throw new Error('cargo build --bin pgchat failed');
  const targetDir = process.env.CARGO_TARGET_DIR ? resolve(REPO, process.env.CARGO_TARGET_DIR) : join(REPO, 'target');
  const bin = join(targetDir, 'debug', 'pgchat');
  if (!existsSync(bin)) throw new Error(`pgchat binary not found at ${bin}`);
  return bin;
}

function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

function withDb(url, db, user) {
  const u = new URL(url);
  u.pathname = '/' + db;
  if (user) { u.username = user; u.password = ''; }
  return u.toString();
}

/** One test environment: database, pgchat server, users, browser. */
export class ChatEnv {
  constructor(name) {
    this.name = name;
    this.db = `pgchat_browser_${process.pid}_${name}`;
    this.baseUrl = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test';
    this.adminUrl = withDb(this.baseUrl, this.db);
    this.appUrl = withDb(this.baseUrl, this.db, 'authenticator');
    this.server = null;
    this.browser = null;
    this.pageErrors = [];
    this.logFile = join(LOGS, `pgchat-${name}.log`);
    this.started = false;
  }

  async start() {
    if (!existsSync(join(REPO, 'frontend', 'node_modules', 'alpinejs', 'dist', 'module.esm.js'))) {
      throw new Error('frontend/node_modules is missing: run `npm ci` in frontend/');
    }
    mkdirSync(SCREENSHOTS, { recursive: true });
    mkdirSync(LOGS, { recursive: true });
    this.bin = pgchatBinary();
    psql(withDb(this.baseUrl, 'postgres'), `drop database if exists "${this.db}" with (force); create database "${this.db}";`);
    this.dbCreated = true;
    const migrate = spawnSync(this.bin, ['migrate'], { env: this.env(), encoding: 'utf8', timeout: 120_000 });
    if (migrate.status !== 0) throw new Error(`pgchat migrate failed: ${migrate.stderr}`);
    this.port = await freePort();
    this.url = `http://127.0.0.1:${this.port}/`;
    await this.startServer();
    this.browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 60_000 });
  }

  env() {
    return {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      RUST_LOG: process.env.RUST_LOG || 'info',
      DATABASE_URL: this.appUrl,
      ADMIN_DATABASE_URL: this.adminUrl,
      JWT_SECRET,
      WS_HOST: '127.0.0.1',
      WS_PORT: String(this.port || 3001),
      STATIC_DIR: join(REPO, 'frontend'),
    };
  }

  /** Starts `pgchat serve` on this env's port and waits until /readyz answers 200. */
  async startServer() {
    // One log per test file: truncated by the first start, appended to by restarts.
    const log = openSync(this.logFile, this.started ? 'a' : 'w');
    const child = spawn(this.bin, ['serve'], { env: this.env(), stdio: ['ignore', log, log] });
    closeSync(log); // the child has its own copy
    this.started = true;
    this.server = child;
    // If the test process dies first, do not leave this pgchat behind.
    const reap = () => { if (child.exitCode === null) try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ } };
    process.once('exit', reap);
    child.once('exit', () => process.removeListener('exit', reap));
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`pgchat exited with ${child.exitCode}; see ${this.logFile}`);
      try {
        const r = await fetch(this.url + 'readyz', { signal: AbortSignal.timeout(1000) });
        if (r.status === 200) return;
      } catch { /* not up yet */ }
      await sleep(100);
    }
    throw new Error('pgchat did not become ready within 30 s');
  }

  /** SIGKILLs the pgchat process this env started and waits for it to be gone. */
  async killServer() {
    const child = this.server;
    this.server = null;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((res) => child.once('exit', res));
    process.kill(child.pid, 'SIGKILL');
    await exited;
  }

  /** Signs up a user through `api.signup` as PostgREST's anon role; returns {id,name,token}. */
  signup(email, name) {
    const out = psql(this.appUrl, `begin;
      select set_config('role', 'anon', true), set_config('request.jwt.claims', '{"role":"anon"}', true);
      select api.signup(${quoteLiteral(email)}, 'password123', ${quoteLiteral(name)});
      commit;`);
    return JSON.parse(out[out.length - 1]);
  }

  /** Runs `sql` as `user` exactly as PostgREST would for a request with their token. */
  asUser(user, sql) {
    const claims = JSON.stringify({ sub: String(user.id), role: 'authenticated', name: user.name });
    return psql(this.appUrl, `begin;
      select set_config('role', 'authenticated', true), set_config('request.jwt.claims', ${quoteLiteral(claims)}, true);
      ${sql};
      commit;`).slice(1);
  }

  /** A fresh browser context signed in as `user` (token in the URL fragment).
   *  `locale` is the browser's language (navigator.language), `path` the page. */
  async openAs(user, { width = 1280, height = 800, locale = 'en-US', path = '' } = {}) {
    const page = await this.newPage(user.name, { width, height, locale });
    await page.goto(this.url + path + '#token=' + encodeURIComponent(user.token));
    await page.locator('.conn-state.conn-connected').waitFor({ state: 'attached' });
    return page;
  }

  /** A fresh browser context and page; page errors are recorded under `who`. */
  async newPage(who, { width = 1280, height = 800, locale = 'en-US' } = {}) {
    const context = await this.browser.newContext({ viewport: { width, height }, locale });
    context.setDefaultTimeout(15_000);
    const page = await context.newPage();
    page.on('pageerror', (e) => this.pageErrors.push(`${who}: ${e.message}`));
    return page;
  }

  async screenshot(page, name) {
    await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`) });
  }

  async stop() {
    if (this.browser) await this.browser.close().catch(() => {});
    await this.killServer().catch(() => {});
    if (this.dbCreated) {
      try {
        psql(withDb(this.baseUrl, 'postgres'), `drop database if exists "${this.db}" with (force);`);
      } catch (e) {
        console.error(`could not drop ${this.db}: ${e.message}`);
      }
    }
  }
}
