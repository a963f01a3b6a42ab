// Drives npm's nflx-spectator 1.0.0, unchanged, as two instances of a service would: each
// registry posts the aggregator's update payload to `uri`, once, on stop. A third registry
// posts one measurement the server refuses (a one-letter name) with one it takes, to show
// what the client logs of a validation failure. Run by tests/tests/spectator_e2e.rs.
// Arguments: the uri and a tag value telling the runs apart. Prints the client's log lines
// as JSON.
'use strict';

const spectator = require('nflx-spectator');

const [uri, via] = process.argv.slice(2);
const logs = [];
const logger = {};
for (const level of ['trace', 'debug', 'info', 'warn', 'error']) {
  logger[level] = (msg) => logs.push(`${level}: ${msg}`);
}
logger.isLevelEnabled = () => false;

function instance(node) {
  return new spectator.Registry({
    uri,
    commonTags: { via, 'nf.app': 'nflx-demo' },
    logger,
    frequency: 3600000,
  });
}

function stop(registry) {
  return new Promise((resolve) => registry.stop(() => resolve()));
}

async function main() {
  const a = instance();
  const b = instance();
  a.start();
  b.start();
  a.counter('nflx.requests', { status: '200' }).increment(3);
  b.counter('nflx.requests', { status: '200' }).increment(4);
  a.gauge('nflx.queue').set(5);
  b.gauge('nflx.queue').set(9);
  a.timer('nflx.latency').record(0, 250e6); // 0.25 s
  b.timer('nflx.latency').record(0, 750e6); // 0.75 s
  await stop(a);
  await stop(b);

  const c = instance();
  c.start();
  c.counter('x').increment();
  c.counter('nflx.valid').increment(2);
  await stop(c);
  console.log(JSON.stringify({ logs }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
