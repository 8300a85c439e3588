export * from './clock';
export * from './core';
export * from './errors';
export * from './file-store';
export * from './model';
export * from './rate-limit';
export * from './root-key';
export * from './store';
export { canonicalEncryptionContext } from './validate';
