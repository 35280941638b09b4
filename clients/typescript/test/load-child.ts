// A second process for the cache stampede test: runs `count` concurrent getOrLoad callers of
// one key against one server replica, when the parent says "go" on stdin, and prints how many
// times its loader ran and the values its callers got, as JSON.
//
//   node build/test/load-child.js ADDRESS NAMESPACE KEY COUNT
import { once } from "node:events";
import { setTimeout as delay } from "node:timers/promises";

import { Client } from "../src/index.js";

const [address, namespace, key, count] = process.argv.slice(2);
const client = new Client(address!, { namespace: namespace! });
// Connect before the start, so both processes' callers arrive together.
await client.cache.get("warm-up");
process.stdout.write("ready\n");
await once(process.stdin, "data");
// Nothing more to read: a stdin left open would keep this process alive.
process.stdin.destroy();
let loads = 0;
const values = await Promise.all(
  Array.from({ length: Number(count) }, () =>
    client.cache.getOrLoad(key!, 60_000, async () => {
      loads++;
      await delay(500);
      return `loaded by ${process.pid}`;
    }, { leaseTtlMs: 30_000 }),
  ),
);
process.stdout.write(JSON.stringify({ loads, values: values.map((v) => v.toString()) }) + "\n");
client.close();
