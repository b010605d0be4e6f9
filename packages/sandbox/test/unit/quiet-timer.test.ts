import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QuietTimer } from '../../src/quiet-timer.js';

test('QuietTimer: starts once pokes stop for quietMs; each poke moves the start', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  let runs = 0;
  const q = new QuietTimer(() => runs++, 100, 1000);
  q.poke();
  t.mock.timers.tick(60);
  q.poke(); // activity: the start moves to 100 ms from now
  t.mock.timers.tick(60);
  assert.equal(runs, 0, 'still inside the quiet period');
  assert.equal(q.pending, true);
  t.mock.timers.tick(40);
  assert.equal(runs, 1);
  assert.equal(q.pending, false);
  t.mock.timers.tick(500);
  assert.equal(runs, 1, 'one start per batch of pokes');
});

test('QuietTimer: steady activity still starts the work maxDeferMs after the first poke', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  let runs = 0;
  const q = new QuietTimer(() => runs++, 100, 300);
  for (let i = 0; i < 5; i++) {
    q.poke();
    t.mock.timers.tick(50);
  }
  // 250 ms of pokes every 50 ms: the quiet period never came, the deadline is 300 ms
  assert.equal(runs, 0);
  q.poke();
  t.mock.timers.tick(50);
  assert.equal(runs, 1, 'started at the deadline despite the activity');
});

test('QuietTimer: flush starts pending work at once, and is a no-op when nothing is pending', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  let runs = 0;
  const q = new QuietTimer(() => runs++, 100, 1000);
  assert.equal(q.flush(), false);
  q.poke();
  assert.equal(q.flush(), true);
  assert.equal(runs, 1);
  t.mock.timers.tick(1000);
  assert.equal(runs, 1, 'the cancelled timer does not fire again');
});
