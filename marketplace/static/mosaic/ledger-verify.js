/* Verifies the ledger's proofs in the browser, with nothing but WebCrypto (SHA-256, Ed25519).
 *
 * The same rules as the Python side (ledger/merkle.py, ledger/signing.py, ledger/checkpoints.py):
 * - RFC 9162 Merkle trees: leaf hash SHA-256(0x00 || data), node hash SHA-256(0x01 || left || right);
 *   inclusion proofs (section 2.1.3.2) and consistency proofs (section 2.1.4.2);
 * - C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 keys, and C2SP tlog-checkpoint bodies.
 * Tree sizes and indexes are plain numbers (exact below 2^53), so the bit arithmetic is written with
 * division, not JavaScript's 32-bit operators.
 */
"use strict";

const LedgerVerify = (() => {
  const encoder = new TextEncoder();
  const decoder = new TextDecoder("utf-8", { fatal: true });

  function concat(...parts) {
    const length = parts.reduce((sum, part) => sum + part.length, 0);
    const out = new Uint8Array(length);
    let offset = 0;
    for (const part of parts) {
      out.set(part, offset);
      offset += part.length;
    }
    return out;
  }

  function fromBase64(text) {
    if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
      throw new Error(`not base64: ${JSON.stringify(text)}`);
    }
    const binary = atob(text);
    return Uint8Array.from(binary, (c) => c.charCodeAt(0));
  }

  function toBase64(bytes) {
    return btoa(String.fromCharCode(...bytes));
  }

  function fromHex(text) {
    if (typeof text !== "string" || !/^([0-9a-f]{2})*$/.test(text)) throw new Error(`not hex: ${JSON.stringify(text)}`);
    return Uint8Array.from(text.match(/../g) || [], (pair) => parseInt(pair, 16));
  }

  function toHex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function equal(a, b) {
    return a.length === b.length && a.every((value, i) => value === b[i]);
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  const leafHash = (data) => sha256(concat(Uint8Array.of(0), data));
  const nodeHash = (left, right) => sha256(concat(Uint8Array.of(1), left, right));
  const isOdd = (n) => n % 2 === 1;
  const half = (n) => Math.floor(n / 2);

  /** The root an inclusion proof of a leaf hash implies, or null if the proof is malformed. */
  async function rootFromInclusionProof(leaf, index, treeSize, proof) {
    if (!(Number.isSafeInteger(index) && Number.isSafeInteger(treeSize) && index >= 0 && index < treeSize)) return null;
    let fn = index;
    let sn = treeSize - 1;
    let r = leaf;
    for (const p of proof) {
      if (sn === 0) return null;
      if (isOdd(fn) || fn === sn) {
        r = await nodeHash(p, r);
        if (!isOdd(fn)) {
          while (fn !== 0 && !isOdd(fn)) {
            fn = half(fn);
            sn = half(sn);
          }
        }
      } else {
        r = await nodeHash(r, p);
      }
      fn = half(fn);
      sn = half(sn);
    }
    return sn === 0 ? r : null;
  }

  async function verifyInclusion(leafData, index, treeSize, proof, root) {
    const computed = await rootFromInclusionProof(await leafHash(leafData), index, treeSize, proof);
    return computed !== null && equal(computed, root);
  }

  async function verifyConsistency(oldSize, newSize, oldRoot, newRoot, proof) {
    if (!(Number.isSafeInteger(oldSize) && Number.isSafeInteger(newSize) && oldSize >= 0 && oldSize <= newSize)) return false;
    if (oldSize === newSize) return proof.length === 0 && equal(oldRoot, newRoot);
    if (oldSize === 0) return proof.length === 0 && equal(oldRoot, await sha256(new Uint8Array(0)));
    if (proof.length === 0) return false;
    const path = [...proof];
    const size = BigInt(oldSize);
    if ((size & (size - 1n)) === 0n) path.unshift(oldRoot);
    let fn = oldSize - 1;
    let sn = newSize - 1;
    while (isOdd(fn)) {
      fn = half(fn);
      sn = half(sn);
    }
    let fr = path[0];
    let sr = path[0];
    for (const c of path.slice(1)) {
      if (sn === 0) return false;
      if (isOdd(fn) || fn === sn) {
        fr = await nodeHash(c, fr);
        sr = await nodeHash(c, sr);
        if (!isOdd(fn)) {
          while (fn !== 0 && !isOdd(fn)) {
            fn = half(fn);
            sn = half(sn);
          }
        }
      } else {
        sr = await nodeHash(sr, c);
      }
      fn = half(fn);
      sn = half(sn);
    }
    return equal(fr, oldRoot) && equal(sr, newRoot) && sn === 0;
  }

  // --- signed notes and checkpoints -------------------------------------------------------------------

  const ED25519 = 0x01;
  const SIGNATURE_PREFIX = "\u2014 ";

  async function keyId(name, publicKey) {
    return (await sha256(concat(encoder.encode(name), Uint8Array.of(0x0a, ED25519), publicKey))).slice(0, 4);
  }

  /** {name, keyId, publicKey} of "<name>+<key ID hex>+<base64(0x01 || public key)>", its ID checked. */
  async function parseVerifierKey(text) {
    const trimmed = text.trim();
    const first = trimmed.indexOf("+");
    const second = trimmed.indexOf("+", first + 1);
    if (first < 0 || second < 0) throw new Error("a verifier key is name+keyid+base64");
    const [name, hexId, encoded] = [trimmed.slice(0, first), trimmed.slice(first + 1, second), trimmed.slice(second + 1)];
    const raw = fromBase64(encoded);
    if (raw.length !== 33 || raw[0] !== ED25519) throw new Error("the verifier key is not a 32-byte Ed25519 key");
    const wanted = fromHex(hexId);
    const publicKey = raw.slice(1);
    if (wanted.length !== 4 || !equal(await keyId(name, publicKey), wanted)) {
      throw new Error("the verifier key's ID does not match its name and public key");
    }
    return { name, keyId: wanted, publicKey };
  }

  /** {text, signatures: [{name, blob}]} of a signed note. */
  function splitNote(note) {
    if (!note.endsWith("\n") || !note.includes("\n\n")) {
      throw new Error("a signed note is text, a blank line and signature lines, ending in a newline");
    }
    const cut = note.lastIndexOf("\n\n");
    const text = note.slice(0, cut + 1);
    const lines = note.slice(cut + 2).split("\n").slice(0, -1);
    const signatures = lines.map((line) => {
      if (!line.startsWith(SIGNATURE_PREFIX)) throw new Error(`not a signature line: ${line}`);
      const fields = line.slice(SIGNATURE_PREFIX.length).split(" ");
      if (fields.length !== 2) throw new Error(`not a signature line: ${line}`);
      const blob = fromBase64(fields[1]);
      if (blob.length < 5) throw new Error(`signature too short in ${line}`);
      return { name: fields[0], blob };
    });
    if (!signatures.length) throw new Error("the note has no signature");
    return { text, signatures };
  }

  /** The note's text if the verifier key's Ed25519 signature on it holds; throws otherwise. */
  async function openNote(note, verifierKey) {
    const key = typeof verifierKey === "string" ? await parseVerifierKey(verifierKey) : verifierKey;
    const { text, signatures } = splitNote(note);
    const cryptoKey = await crypto.subtle.importKey("raw", key.publicKey, { name: "Ed25519" }, false, ["verify"]);
    for (const { name, blob } of signatures) {
      if (name !== key.name || !equal(blob.slice(0, 4), key.keyId)) continue;
      const valid = await crypto.subtle.verify({ name: "Ed25519" }, cryptoKey, blob.slice(4), encoder.encode(text));
      if (!valid) throw new Error(`the signature by ${name} does not verify`);
      return text;
    }
    throw new Error(`the note carries no signature by ${key.name}`);
  }

  function parseCheckpoint(text) {
    const lines = text.split("\n");
    if (lines.length < 4 || lines[lines.length - 1] !== "") {
      throw new Error("a checkpoint is an origin, a tree size and a root hash, one per line");
    }
    const [origin, size, root] = lines;
    if (!origin || !/^(0|[1-9][0-9]*)$/.test(size)) throw new Error("bad checkpoint origin or size");
    const rootHash = fromBase64(root);
    if (rootHash.length !== 32) throw new Error("a checkpoint's root hash is 32 bytes");
    return { origin, treeSize: Number(size), rootHash };
  }

  async function openCheckpoint(note, verifierKey) {
    return parseCheckpoint(await openNote(note, verifierKey));
  }

  // --- what the pages check ---------------------------------------------------------------------------

  async function check(checks, what, test) {
    try {
      const ok = await test();
      checks.push({ what, ok: ok === true, detail: ok === true ? "" : String(ok || "does not hold") });
    } catch (error) {
      checks.push({ what, ok: false, detail: error.message });
    }
  }

  /** Checks one entry as GET /api/ledger/entries/<n> serves it, against the verifier key's checkpoint. */
  async function verifyEntry(entry, verifierKey) {
    const checks = [];
    const data = encoder.encode(entry.leaf_data);
    await check(checks, "the leaf hash is SHA-256(0x00 || canonical JSON)", async () =>
      toHex(await leafHash(data)) === entry.leaf_hash || "the served leaf hash differs from the recomputed one");
    await check(checks, "the canonical JSON holds the entry's fields", () => {
      const parsed = JSON.parse(entry.leaf_data);
      return (parsed.sequence === entry.sequence && parsed.kind === entry.kind && parsed.actor === entry.actor &&
              parsed.time === entry.time && parsed.prev_hash === entry.prev_hash) || "the fields differ";
    });
    const inclusion = entry.inclusion;
    if (!inclusion) {
      checks.push({ what: "a signed checkpoint covers the entry", ok: false, detail: entry.inclusion_pending || "none yet" });
      return { ok: false, checks };
    }
    let checkpoint = null;
    await check(checks, "the checkpoint's Ed25519 signature verifies with the verifier key", async () => {
      checkpoint = await openCheckpoint(inclusion.checkpoint, verifierKey);
      return true;
    });
    await check(checks, "the proof is for the checkpoint's tree size and root", () =>
      (checkpoint !== null && checkpoint.treeSize === inclusion.tree_size && toBase64(checkpoint.rootHash) === inclusion.root_hash) ||
      "the proof names another tree than the signed checkpoint");
    await check(checks, "the inclusion proof leads from the leaf to the signed root (RFC 9162)", async () => {
      if (checkpoint === null) return "no signed root to compare with";
      const proof = inclusion.proof.map(fromBase64);
      return (await verifyInclusion(data, inclusion.leaf_index, checkpoint.treeSize, proof, checkpoint.rootHash)) ||
        "the proof does not lead to the signed root";
    });
    return { ok: checks.every((c) => c.ok), checks };
  }

  /** Checks that the second signed checkpoint extends the first, with GET /api/ledger/consistency's answer. */
  async function verifyCheckpointConsistency(firstNote, secondNote, consistency, verifierKey) {
    const checks = [];
    let first = null;
    let second = null;
    await check(checks, "the first checkpoint's signature verifies", async () => {
      first = await openCheckpoint(firstNote, verifierKey);
      return true;
    });
    await check(checks, "the second checkpoint's signature verifies", async () => {
      second = await openCheckpoint(secondNote, verifierKey);
      return true;
    });
    await check(checks, "the consistency proof extends the first signed tree to the second (RFC 9162)", async () => {
      if (first === null || second === null) return "no signed roots to compare";
      if (consistency.first !== first.treeSize || consistency.second !== second.treeSize) {
        return "the proof is for other tree sizes";
      }
      const proof = consistency.proof.map(fromBase64);
      return (await verifyConsistency(first.treeSize, second.treeSize, first.rootHash, second.rootHash, proof)) ||
        "the proof does not connect the two signed roots";
    });
    return { ok: checks.every((c) => c.ok), checks };
  }

  function render(container, result) {
    container.replaceChildren();
    container.dataset.status = result.ok ? "verified" : "failed";
    const heading = document.createElement("p");
    heading.className = result.ok ? "status-valid" : "status-failed";
    heading.textContent = result.ok ? "Verified in this browser." : "Verification FAILED in this browser.";
    container.append(heading);
    const list = document.createElement("ul");
    for (const item of result.checks) {
      const li = document.createElement("li");
      li.className = item.ok ? "status-valid" : "status-failed";
      li.textContent = `${item.ok ? "\u2713" : "\u2717"} ${item.what}${item.detail ? ": " + item.detail : ""}`;
      list.append(li);
    }
    container.append(list);
  }

  async function fetchText(url) {
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`${url} answered ${response.status}`);
    return response.text();
  }

  async function fetchJson(url) {
    return JSON.parse(await fetchText(url));
  }

  /** Wires a page: [data-verify-entry] and [data-verify-consistency] containers. */
  async function runPage() {
    for (const container of document.querySelectorAll("[data-verify-entry]")) {
      try {
        const [entry, key] = await Promise.all([
          fetchJson(container.dataset.verifyEntry), fetchText(container.dataset.verifierKey),
        ]);
        render(container, await verifyEntry(entry, key.trim()));
      } catch (error) {
        render(container, { ok: false, checks: [{ what: "fetching the entry and the key", ok: false, detail: error.message }] });
      }
    }
    const form = document.querySelector("form[data-verify-consistency]");
    if (form) {
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const container = document.getElementById(form.dataset.verifyConsistency);
        const notes = JSON.parse(document.getElementById("checkpoint-notes").textContent);
        const first = notes[form.elements.first.value];
        const second = notes[form.elements.second.value];
        try {
          if (!first || !second) throw new Error("choose two checkpoints");
          const [firstBody, secondBody] = [parseCheckpoint(splitNote(first).text), parseCheckpoint(splitNote(second).text)];
          const url = `${form.action}?first=${firstBody.treeSize}&second=${secondBody.treeSize}`;
          const [consistency, key] = await Promise.all([fetchJson(url), fetchText(form.dataset.verifierKey)]);
          render(container, await verifyCheckpointConsistency(first, second, consistency, key.trim()));
        } catch (error) {
          render(container, { ok: false, checks: [{ what: "fetching the proof", ok: false, detail: error.message }] });
        }
      });
    }
  }

  return {
    concat, fromBase64, toBase64, fromHex, toHex, sha256, leafHash, nodeHash, rootFromInclusionProof,
    verifyInclusion, verifyConsistency, keyId, parseVerifierKey, splitNote, openNote, parseCheckpoint,
    openCheckpoint, verifyEntry, verifyCheckpointConsistency, render, runPage,
  };
})();

if (typeof document !== "undefined") {
  document.addEventListener("DOMContentLoaded", () => { LedgerVerify.runPage(); });
}
