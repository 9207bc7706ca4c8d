import t from 'tap';
import { chromium, type Browser } from 'playwright-core';
import { useUpstream } from '../helpers/upstream.js';
import { startTestSidecar } from '../helpers/sidecar.js';
import { curl } from '../helpers/clients.js';

const TOKEN_ENV = 'FIRMA_TEST_PAGE_TOKEN';
const TOKEN = 'page-approver-secret-91c2';
process.env[TOKEN_ENV] = TOKEN;

const RULES = `
[[rules]]
method = "POST"
host = "127.0.0.1"
path = "/echo"
action_class = "payments.refund"
risk = "high"
body_fields = ["amount", "currency"]
`;

const up = useUpstream(t);
let browser: Browser;
t.before(async () => {
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  });
});
t.teardown(async () => {
  await browser.close();
});

t.test('the approvals page shows the held request live, and clicking Approve lets the held curl finish with 200', async (t) => {
  const sc = await startTestSidecar('', { rules: RULES, adminExtra: `token_env = "${TOKEN_ENV}"\ntoken_identity = "web-approver"` });
  t.teardown(() => sc.stop());
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    // The deliberate 401 above is logged by the browser as a failed resource load; anything else counts.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text());
  });
  await page.goto(`${sc.adminUrl}/approvals/ui`);
  await page.locator('#live', { hasText: 'live' }).waitFor({ timeout: 10_000 });
  t.equal(await page.locator('#pending tbody tr').count(), 0, 'nothing pending yet');

  // The request arrives after the page loaded: it must appear without a reload (event stream).
  const held = curl(['--proxy', sc.proxyUrl, '-X', 'POST', '-H', 'content-type: application/json',
    '--data', JSON.stringify({ amount: 1234, currency: 'eur', note: '<img src=x onerror=alert(1)>' }),
    `${up.origin}/echo?customer=cus_SECRET123&x=1`]);
  const row = page.locator('#pending tbody tr');
  await row.first().waitFor({ timeout: 10_000 });
  const text = await row.first().innerText();
  t.match(text, 'local-agent');
  t.match(text, `POST http://${up.hostPort}/echo?customer=REDACTED&x=REDACTED`, 'method and URL, query values redacted');
  t.notMatch(text, 'cus_SECRET123');
  t.match(text, 'payments.refund');
  t.match(text, 'high');
  t.match(text, 'default.approve-high', 'policy ids');
  t.match(text, 'amount = 1234', 'extracted body fields');
  t.match(text, 'currency = "eur"');
  t.match(await row.first().locator('td.waiting').innerText(), /^\d+ s$/, 'waiting time');
  t.equal(await page.locator('#pending-count').innerText(), '1');

  // Without a token the click is refused, and the page says why.
  await row.first().getByRole('button', { name: 'Approve' }).click();
  await page.locator('#message.error').waitFor({ timeout: 10_000 });
  t.match(await page.locator('#message').innerText(), /valid admin token is required/);

  await page.fill('#token', TOKEN);
  await page.click('#save-token');
  await row.first().getByRole('button', { name: 'Approve' }).click();
  const r = await held;
  t.equal(r.status, 200, 'the held curl finished with the upstream answer');
  t.equal(r.headers['x-upstream'], 'echo');
  await page.locator('#pending tbody tr').first().waitFor({ state: 'detached', timeout: 10_000 });
  t.equal(await page.locator('#pending-count').innerText(), '0', 'the page updated by itself');
  t.same(errors, [], 'no script or CSP errors');
  const approved = (await sc.sidecar.approvals.list()).pending;
  t.same(approved, []);
  await page.close();
});

t.test('Grant from the page: the next request passes without a prompt, and the grant is listed and revocable', async (t) => {
  const sc = await startTestSidecar('', { rules: RULES, adminExtra: `token_env = "${TOKEN_ENV}"` });
  t.teardown(() => sc.stop());
  const page = await browser.newPage();
  await page.goto(`${sc.adminUrl}/approvals/ui`);
  await page.fill('#token', TOKEN);
  await page.click('#save-token');
  const held = curl(['--proxy', sc.proxyUrl, '-X', 'POST', '-H', 'content-type: application/json', '--data', '{"amount":1}', `${up.origin}/echo`]);
  const row = page.locator('#pending tbody tr').first();
  await row.waitFor({ timeout: 10_000 });
  await row.locator('input.minutes').fill('15');
  await row.getByRole('button', { name: 'Grant' }).click();
  t.equal((await held).status, 200);
  const grantRow = page.locator('#grants tbody tr').first();
  await grantRow.waitFor({ timeout: 10_000 });
  t.match(await grantRow.innerText(), /local-agent\s+payments\.refund\s+127\.0\.0\.1\s+admin/);
  const next = await curl(['--proxy', sc.proxyUrl, '-X', 'POST', '-H', 'content-type: application/json', '--data', '{"amount":2}', `${up.origin}/echo`]);
  t.equal(next.status, 200, 'passes on the grant');
  await grantRow.getByRole('button', { name: 'Revoke' }).click();
  await page.locator('#grants tbody tr').first().waitFor({ state: 'detached', timeout: 10_000 });
  t.same(sc.sidecar.approvals.grants(), []);
  await page.close();
});
