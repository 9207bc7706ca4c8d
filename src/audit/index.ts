export * from './events.js';
export { canonicalJson, chainHash, GENESIS_HASH, signHash, verifyHashSig } from './chain.js';
export { AuditKeyError, loadOrCreateAuditKeys, type AuditKeys } from './keys.js';
export { auditFileSet, listRotated, liveAuditFile } from './files.js';
export { AuditWriter, AuditWriterError, type AuditFsync, type AuditWriterOptions } from './writer.js';
export { verifyAuditFiles, type VerifyOptions, type VerifyResult } from './verify.js';
export { filterEvent, formatEventLine, type TailFilter } from './tail.js';
