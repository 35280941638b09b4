// Rookery from Node.js: @grpc/grpc-js with the protos loaded at run time by
// @grpc/proto-loader. Uses every service: Cache, Lock (including the server-streaming Hold
// and Observe), Session, RateLimiter and Events (a Subscribe stream, and a consumer group:
// Append, Consume, Ack). Exits non-zero if any call fails or returns
// something unexpected.
//
//   npm install && ROOKERY_ADDRESS=127.0.0.1:50051 node example.js
//
// Against a server with TLS and auth (its [tls] and [auth] config sections), also set
// ROOKERY_CA_FILE (PEM of the CA that signed the server's certificate; the certificate must
// name the host of ROOKERY_ADDRESS, best a DNS name such as localhost: grpc-js sends an IP
// address as the TLS server name, which RFC 6066 forbids and servers warn about) and ROOKERY_TOKEN (a bearer token whose sha256 is in
// [[auth.tokens]], with a grant in the namespace). The example then connects with TLS, sends
// `authorization: Bearer <token>` with every call, and shows a call without the token refused
// with UNAUTHENTICATED. Without them it connects in plaintext, the simplest case: a server on
// loopback with auth off. scripts/examples.sh runs it with TLS and a token.
'use strict';

const assert = require('node:assert/strict');
const path = require('node:path');
const crypto = require('node:crypto');
const fs = require('node:fs');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const protoRoot = path.join(__dirname, '..', '..', 'proto');
const definition = protoLoader.loadSync(
  [
    'rookery/v1/cache.proto',
    'rookery/v1/events.proto',
    'rookery/v1/lock.proto',
    'rookery/v1/session.proto',
    'rookery/v1/rate_limiter.proto',
  ],
  { includeDirs: [protoRoot], keepCase: true, longs: Number, defaults: true, oneofs: true },
);
const v1 = grpc.loadPackageDefinition(definition).rookery.v1;

const address = process.env.ROOKERY_ADDRESS || '127.0.0.1:50051';
const caFile = process.env.ROOKERY_CA_FILE || null;
const token = process.env.ROOKERY_TOKEN || null;
// Every call carries the namespace (tenant) in metadata.
const metadata = new grpc.Metadata();
metadata.set('x-rookery-namespace', `example-node-${crypto.randomUUID().slice(0, 8)}`);

// TLS trusting the given CA when there is one, plaintext otherwise.
const channelCredentials = () =>
  caFile ? grpc.credentials.createSsl(fs.readFileSync(caFile)) : grpc.credentials.createInsecure();
let credentials = channelCredentials();
if (token && caFile) {
  // Adds `authorization: Bearer <token>` to every call made with these credentials.
  const bearer = grpc.credentials.createFromMetadataGenerator((_params, callback) => {
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${token}`);
    callback(null, md);
  });
  credentials = grpc.credentials.combineChannelCredentials(credentials, bearer);
} else if (token) {
  // grpc-js attaches call credentials over TLS only: in plaintext the token goes as metadata.
  metadata.set('authorization', `Bearer ${token}`);
}

const call = (client, method, request) =>
  new Promise((resolve, reject) => client[method](request, metadata, (error, response) => (error ? reject(error) : resolve(response))));
const seconds = (n) => ({ seconds: n, nanos: 0 });

// A call that carries no token is refused: UNAUTHENTICATED, before any handler runs.
async function showRefusedWithoutToken() {
  const anonymous = new v1.Cache(address, channelCredentials());
  const withoutToken = metadata.clone();
  withoutToken.remove('authorization');
  const error = await new Promise((resolve, reject) => {
    anonymous.Get({ key: 'greeting' }, withoutToken, (e) => (e ? resolve(e) : reject(new Error('a call without a token was answered'))));
  });
  anonymous.close();
  assert.equal(error.code, grpc.status.UNAUTHENTICATED, error);
  console.log(`node example: without the token, Cache.Get is refused: ${grpc.status[error.code]}: ${error.details}`);
}

async function main() {
  if (token) await showRefusedWithoutToken();
  const cache = new v1.Cache(address, credentials);
  await call(cache, 'Set', { key: 'greeting', value: Buffer.from('hello'), ttl: seconds(60) });
  const got = await call(cache, 'Get', { key: 'greeting' });
  assert.equal(got.found, true);
  assert.equal(got.value.toString(), 'hello');

  const lock = new v1.Lock(address, credentials);
  const lease = await call(lock, 'Acquire', { name: 'report', ttl: seconds(10), owner: 'node' });
  assert.equal(lease.acquired, true);
  assert.equal((await call(lock, 'Acquire', { name: 'report', ttl: seconds(10) })).acquired, false);
  assert.equal((await call(lock, 'Release', { name: 'report', token: lease.token })).released, true);

  // Hold (server streaming): the first message is the grant; cancelling releases the lock.
  const held = await new Promise((resolve, reject) => {
    const stream = lock.Hold({ name: 'report', ttl: seconds(5) }, metadata);
    stream.once('data', (message) => { stream.cancel(); resolve(message); });
    stream.once('error', (error) => { if (error.code !== grpc.status.CANCELLED) reject(error); });
  });
  assert.equal(held.event, 'acquired');
  assert.ok(held.acquired.fence > lease.fence);

  // Observe (server streaming): an election without a leader says so first.
  const observed = await new Promise((resolve, reject) => {
    const stream = lock.Observe({ election: 'scheduler' }, metadata);
    stream.once('data', (message) => { stream.cancel(); resolve(message); });
    stream.once('error', (error) => { if (error.code !== grpc.status.CANCELLED) reject(error); });
  });
  assert.equal(observed.leader, null);

  const sessions = new v1.Session(address, credentials);
  const created = await call(sessions, 'Create', { subject: 'user-1', attributes: { role: Buffer.from('admin') } });
  const { session } = await call(sessions, 'Get', { id: created.id, touch: true });
  assert.equal(session.subject, 'user-1');
  assert.equal(session.attributes.role.toString(), 'admin');
  assert.equal((await call(sessions, 'Delete', { id: created.id })).deleted, true);
  await assert.rejects(call(sessions, 'Get', { id: created.id }), (error) => error.code === grpc.status.NOT_FOUND);

  const limiter = new v1.RateLimiter(address, credentials);
  const spec = { limit: 2, period: seconds(60) };
  const allowed = [];
  for (let i = 0; i < 3; i += 1) {
    allowed.push((await call(limiter, 'Check', { key: 'client-a', spec })).allowed);
  }
  assert.deepEqual(allowed, [true, true, false]);

  // Events: subscribe (the first message confirms it is live), publish, receive.
  const events = new v1.Events(address, credentials);
  const received = await new Promise((resolve, reject) => {
    const stream = events.Subscribe({ channels: ['greetings'] }, metadata);
    stream.on('data', (message) => {
      if (message.event === 'subscribed') {
        call(events, 'Publish', { channel: 'greetings', payload: Buffer.from('hi') }).catch(reject);
      } else if (message.event === 'message') {
        stream.cancel();
        resolve(message.message);
      }
    });
    stream.once('error', (error) => { if (error.code !== grpc.status.CANCELLED) reject(error); });
  });
  assert.equal(received.channel, 'greetings');
  assert.equal(received.payload.toString(), 'hi');

  // A work queue: append jobs, consume them as one consumer of a group, ack each batch.
  for (const n of [0, 1, 2]) {
    await call(events, 'Append', { stream: 'jobs', fields: { n: Buffer.from(String(n)) } });
  }
  const done = await new Promise((resolve, reject) => {
    const seen = [];
    const stream = events.Consume({ stream: 'jobs', group: 'workers', consumer: 'node-1', create_group: true }, metadata);
    stream.on('data', (message) => {
      if (message.event !== 'deliveries') return;
      const { deliveries } = message.deliveries;
      seen.push(...deliveries.map((d) => d.fields.n.toString()));
      call(events, 'Ack', { stream: 'jobs', group: 'workers', ids: deliveries.map((d) => d.id) })
        .then((acked) => {
          assert.equal(Number(acked.acked), deliveries.length);
          if (seen.length === 3) {
            stream.cancel();
            resolve(seen);
          }
        })
        .catch(reject);
    });
    stream.once('error', (error) => { if (error.code !== grpc.status.CANCELLED) reject(error); });
  });
  assert.deepEqual(done, ['0', '1', '2']);
  const described = await call(events, 'DescribeStream', { stream: 'jobs' });
  assert.equal(Number(described.length), 3);
  assert.equal(Number(described.groups[0].pending), 0);

  for (const client of [cache, lock, sessions, limiter, events]) client.close();
  const how = `${caFile ? 'TLS' : 'plaintext'}, ${token ? 'bearer token' : 'no token'}`;
  console.log(`node example (${how}): every call answered as expected`);
}

main().catch((error) => {
  console.error('node example failed:', error);
  process.exit(1);
});
