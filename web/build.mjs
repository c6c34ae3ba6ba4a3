// Builds the console into dist/ (served by the gateway at /): one ES bundle, the stylesheet, the
// Swagger UI assets and the guide pages (docs/guide/*.md). Run by `make install` (node build.mjs).
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { cpSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
const assets = join(dist, "assets");
rmSync(dist, { recursive: true, force: true });
mkdirSync(join(assets, "swagger"), { recursive: true });
mkdirSync(join(assets, "guide"), { recursive: true });

await build({
  entryPoints: [join(here, "src", "main.js")],
  bundle: true,
  format: "esm",
  minify: true,
  sourcemap: false,
  target: ["chrome110", "firefox110", "safari16"],
  outfile: join(assets, "app.js"),
  legalComments: "linked",
});
cpSync(join(here, "src", "styles.css"), join(assets, "styles.css"));
cpSync(join(here, "src", "favicon.svg"), join(assets, "favicon.svg"));

const swagger = join(here, "node_modules", "swagger-ui-dist");
for (const f of ["swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"]) {
  cpSync(join(swagger, f), join(assets, "swagger", f));
}

// the guide: markdown kept in the repository, listed in order by docs/guide/index.json
const guide = join(here, "..", "docs", "guide");
for (const f of readdirSync(guide)) cpSync(join(guide, f), join(assets, "guide", f));

// index.html with content-hashed asset URLs (long cache for assets, none for the page)
const hash = (p) => createHash("sha256").update(readFileSync(p)).digest("hex").slice(0, 12);
const page = readFileSync(join(here, "index.html"), "utf8")
  .replace("/assets/app.js", `/assets/app.js?v=${hash(join(assets, "app.js"))}`)
  .replace("/assets/styles.css", `/assets/styles.css?v=${hash(join(assets, "styles.css"))}`)
  .replace("/assets/favicon.svg", `/assets/favicon.svg?v=${hash(join(assets, "favicon.svg"))}`);
writeFileSync(join(dist, "index.html"), page);
console.log(`console built into ${dist}`);
