export {};
export { startPostgres, findPostgresBinDir } from './services/postgres.js';
export type { PostgresService, StartPostgresOptions } from './services/postgres.js';
export { startRedis } from './services/redis.js';
export type { RedisService, StartRedisOptions } from './services/redis.js';
export { startS3, S3_CLIENT_COMPAT } from './services/s3.js';
export type { S3Service, StartS3Options } from './services/s3.js';
