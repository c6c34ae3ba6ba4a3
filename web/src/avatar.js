// Pixel avatars in dicebear's bottts style, rendered here from the seed: no request leaves the page.
import { createAvatar } from "@dicebear/core";
import * as bottts from "@dicebear/bottts";
import { h } from "./dom.js";

const cache = new Map();

export function avatar(seed, size = 48) {
  let uri = cache.get(seed);
  if (!uri) {
    uri = createAvatar(bottts, { seed, size: 96 }).toDataUri();
    cache.set(seed, uri);
  }
  return h("img", { class: "avatar", src: uri, width: size, height: size, alt: "" });
}
