// Generates the protobuf messages and @grpc/grpc-js service clients under src/gen/ from the
// repository's protos (proto/rookery/v1/*.proto), with buf (its compiler ships inside the npm
// package, so no protoc download) and ts-proto as a local plugin. The dev dependency is buf's
// Linux x64 package itself rather than @bufbuild/buf, whose per-platform optional packages a
// registry mirror may lack (npm ci then refuses the lock file); only the generator and the
// drift test need it, never the package's users.
//
//   node scripts/generate.js [OUT_DIR]     (default: src/gen)
//
// The generated code is committed so that the package installs without any code generator;
// test/drift.test.ts runs this script into a temporary directory and fails when the result
// differs from src/gen.
import { execFileSync } from "node:child_process";
import { rmSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const packageDir = resolve(here, "..");
const protoDir = resolve(packageDir, "..", "..", "proto");
const out = resolve(process.argv[2] ?? join(packageDir, "src", "gen"));

// Every option changes the generated code, so they live here and nowhere else.
const tsProtoOptions = [
  "outputServices=grpc-js",
  "esModuleInterop=true",
  "env=node",
  // Fencing tokens and counts are uint64: bigint keeps every value exact.
  "forceLong=bigint",
  "useDate=true",
  "oneof=unions",
  "outputJsonMethods=false",
  "outputPartialMethods=true",
  // ESM needs explicit file extensions in relative imports.
  "importSuffix=.js",
];
const template = {
  version: "v2",
  plugins: [
    {
      local: join(packageDir, "node_modules", ".bin", "protoc-gen-ts_proto"),
      out,
      opt: tsProtoOptions,
    },
  ],
};

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
execFileSync(
  join(packageDir, "node_modules", "@bufbuild", "buf-linux-x64", "bin", "buf"),
  ["generate", protoDir, "--template", JSON.stringify(template)],
  { stdio: "inherit", cwd: packageDir },
);
