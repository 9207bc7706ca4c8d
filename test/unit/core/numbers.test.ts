/** The message number formats (src/core/numbers.ts) give what Intl.NumberFormat en-US gives, without loading ICU in the sidecar. */
import t from 'tap';
import { groupedInteger, usd } from '../../../src/core/numbers.js';

const INTEGER = new Intl.NumberFormat('en-US');
const DOLLARS = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', minimumFractionDigits: 2, maximumFractionDigits: 4 });

t.test('known values', async (t) => {
  t.same([0, 7, 999, 1000, 2000140, 123456789].map(groupedInteger), ['0', '7', '999', '1,000', '2,000,140', '123,456,789']);
  t.same([25, 25.031, 0.00031, 0.00005, 999.99995, 1234.5].map(usd), ['$25.00', '$25.031', '$0.0003', '$0.0001', '$1,000.00', '$1,234.50']);
});

t.test('property: the same text as Intl.NumberFormat en-US on 20,000 random values', async (t) => {
  let seed = 42;
  const random = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const wrong: string[] = [];
  for (let i = 0; i < 20_000 && wrong.length < 5; i++) {
    const n = random() * 10 ** Math.floor(random() * 9);
    if (usd(n) !== DOLLARS.format(n)) wrong.push(`usd(${n}) = ${usd(n)}, Intl: ${DOLLARS.format(n)}`);
    const k = Math.floor(n);
    if (groupedInteger(k) !== INTEGER.format(k)) wrong.push(`groupedInteger(${k}) = ${groupedInteger(k)}, Intl: ${INTEGER.format(k)}`);
  }
  t.same(wrong, []);
});
