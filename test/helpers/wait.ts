// The tests use the project's own polling helpers.
export { eventually, sleep } from '../../src/common/wait';
