// Builds the two committed files from src/pushgate.js: dist/pushgate.mjs (an ES module) and
// dist/pushgate.js (a classic script defining the global `Pushgate`, for one <script> tag),
// both minified. esbuild's output depends only on its pinned version and the sources, so
// scripts/test.d/js-client.sh can check the committed files against a fresh build.
//
//   node build.mjs <outdir>          build
//   node build.mjs --size <outdir>   build, then print each file's minified+gzipped size
import { build } from "esbuild";
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const args = process.argv.slice(2);
const size = args[0] === "--size";
const outdir = args[size ? 1 : 0] ?? "dist";
const { version } = JSON.parse(readFileSync(new URL("package.json", import.meta.url), "utf8"));
const common = {
  entryPoints: [new URL("src/pushgate.js", import.meta.url).pathname],
  bundle: true,
  minify: true,
  target: "es2022",
  legalComments: "none",
  banner: { js: `/*! pushgate-client ${version} | MIT */` },
  logLevel: "warning",
};

await build({ ...common, format: "esm", outfile: `${outdir}/pushgate.mjs` });
await build({ ...common, format: "iife", globalName: "Pushgate", outfile: `${outdir}/pushgate.js` });

if (size) {
  for (const name of ["pushgate.mjs", "pushgate.js"]) {
    const bytes = readFileSync(`${outdir}/${name}`);
    console.log(`${name}: ${bytes.length} bytes minified, ${gzipSync(bytes, { level: 9 }).length} gzipped`);
  }
}
