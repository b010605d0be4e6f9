// The repository tests of repositories.test.ts, unchanged, on the embedded PostgreSQL (PGlite):
// the shared fixture (test/helpers/db.ts) gives PGlite databases when HAKO_TEST_DATABASE=pglite.
// node --test runs each file in its own process, so this setting stays in this file's run.
process.env.HAKO_TEST_DATABASE = 'pglite';
await import('./repositories.test.js');
