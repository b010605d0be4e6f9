// The execute request body: prompt or the seed's user_input (exactly one), executor, preferred_skills.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Fastify from 'fastify';
import { executeBodySchema, executeInput } from '../../src/routes/execute.js';
import type { ExecuteBody } from '../../src/routes/execute.js';

async function validate(
  body: unknown,
): Promise<{ status: number; parsed?: ReturnType<typeof executeInput> }> {
  // as buildApp configures ajv: unknown fields are errors, never silently dropped
  const app = Fastify({ ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array' } } });
  let parsed: ReturnType<typeof executeInput> | undefined;
  app.post<{ Body: ExecuteBody }>('/x', { schema: { body: executeBodySchema(100) } }, (req, reply) => {
    parsed = executeInput(req.body);
    void reply.send({});
  });
  try {
    const res = await app.inject({ method: 'POST', url: '/x', payload: body as Record<string, unknown> });
    return { status: res.statusCode, parsed };
  } finally {
    await app.close();
  }
}

test('prompt and user_input are the same field; exactly one is required', async () => {
  assert.deepEqual((await validate({ prompt: 'hi' })).parsed, {
    prompt: 'hi',
    executor: undefined,
    preferredSkills: undefined,
  });
  assert.equal((await validate({ user_input: 'hello' })).parsed?.prompt, 'hello');
  assert.equal((await validate({})).status, 400);
  assert.equal((await validate({ prompt: 'a', user_input: 'b' })).status, 400);
  assert.equal((await validate({ prompt: 'x'.repeat(101) })).status, 400);
});

test('executor and preferred_skills map to the flow request; unknown fields are refused', async () => {
  const r = await validate({
    prompt: 'p',
    executor: { user_id: 'u-1', name: 'Aiko', email: 'aiko@example.com' },
    preferred_skills: ['pdf', 'xlsx'],
  });
  assert.equal(r.status, 200);
  assert.deepEqual(r.parsed?.executor, { userId: 'u-1', name: 'Aiko', email: 'aiko@example.com' });
  assert.deepEqual(r.parsed?.preferredSkills, ['pdf', 'xlsx']);
  assert.equal((await validate({ prompt: 'p', executor: { name: 'no id' } })).status, 400);
  assert.equal((await validate({ prompt: 'p', preferred_skills: ['a', 'a'] })).status, 400);
  assert.equal((await validate({ prompt: 'p', promptt: 'typo' })).status, 400);
});
