/** hakod's gRPC API: the generated messages, service definition and client (see gen/, never edited by hand). */
export * from '../gen/hako/agent/v1/agent.js';

/** Trailer that carries hako's stable error code on every failed call. */
export const ERROR_CODE_TRAILER = 'hako-error-code';
