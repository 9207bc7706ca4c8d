/**
 * Numbers as people read them in messages (`2,000,140`, `$25.03`), without `Intl.NumberFormat`: its
 * first use loads ICU's locale data, 7.3 MiB of resident memory for a sidecar that formats a number
 * only when it refuses a call over budget (bench/README.md "Memory").
 */

/** 2000140 → "2,000,140" (integers; a fraction is rounded). */
export function groupedInteger(n: number): string {
  const digits = String(Math.round(Math.abs(n)));
  let out = '';
  for (let i = 0; i < digits.length; i++) {
    if (i > 0 && (digits.length - i) % 3 === 0) out += ',';
    out += digits[i];
  }
  return n < 0 && out !== '0' ? `-${out}` : out;
}

/** 25.031 → "$25.031", 25 → "$25.00", 0.00031 → "$0.0003": 2 to 4 decimals, trailing zeros past 2 dropped. */
export function usd(n: number): string {
  const fixed = Math.abs(n).toFixed(4);
  const dot = fixed.indexOf('.');
  let frac = fixed.slice(dot + 1);
  while (frac.length > 2 && frac.endsWith('0')) frac = frac.slice(0, -1);
  const whole = groupedInteger(Number(fixed.slice(0, dot)));
  return `${n < 0 && Number(fixed) !== 0 ? '-' : ''}$${whole}.${frac}`;
}
