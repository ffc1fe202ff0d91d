// tls-files.ts on real files: the pair is checked, the periodic look follows a certbot-style
// symlink swap, a half-renewed pair is refused and reported once, nothing happens when nothing
// changed.
import { afterAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, renameSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { havePeers, makeCert } from "../helpers/peers.ts";
import { loadTlsMaterial, watchTlsFiles, type TlsMaterial } from "../../src/util/tls-files.ts";

const dir = mkdtempSync(join(tmpdir(), "madmail-tls-files-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Points `link` at `target` the way certbot renews: a new symlink renamed over the old one. */
function relink(target: string, link: string): void {
  const tmp = `${link}.new`;
  symlinkSync(target, tmp);
  renameSync(tmp, link);
}

describe.skipIf(!havePeers().openssl)("TLS files", () => {
  test("loadTlsMaterial names the file and the problem", async () => {
    const a = await makeCert(join(dir, "load-a"), "a.test");
    const b = await makeCert(join(dir, "load-b"), "b.test");
    const m = loadTlsMaterial(a);
    expect(m.summary).toMatch(/^CN=a\.test, valid until \d{4}-\d\d-\d\dT[\d:.]+Z, sha256 [0-9A-F:]{95}$/);
    expect(() => loadTlsMaterial({ cert: a.cert, key: b.key })).toThrow(`tls.key ${b.key} does not belong to the certificate in tls.cert ${a.cert}`);
    expect(() => loadTlsMaterial({ cert: join(dir, "missing.pem"), key: a.key })).toThrow(`cannot read tls.cert ${join(dir, "missing.pem")}: ENOENT`);
    const junk = join(dir, "junk.pem");
    writeFileSync(junk, "not a certificate\n");
    expect(() => loadTlsMaterial({ cert: junk, key: a.key })).toThrow(`tls.cert ${junk} holds no PEM certificate`);
    expect(() => loadTlsMaterial({ cert: a.cert, key: junk })).toThrow(`tls.key ${junk} holds no usable PEM private key`);
  });

  test("the periodic look follows a symlink swap, refuses a half-renewed pair once, and applies the complete one", async () => {
    const archive = join(dir, "archive");
    const live = join(dir, "live");
    mkdirSync(archive);
    mkdirSync(live);
    const certs = [await makeCert(join(dir, "gen1"), "one.test"), await makeCert(join(dir, "gen2"), "two.test")];
    certs.forEach((c, i) => {
      copyFileSync(c.cert, join(archive, `fullchain${i + 1}.pem`));
      copyFileSync(c.key, join(archive, `privkey${i + 1}.pem`));
    });
    const files = { cert: join(live, "fullchain.pem"), key: join(live, "privkey.pem") };
    relink(join(archive, "fullchain1.pem"), files.cert);
    relink(join(archive, "privkey1.pem"), files.key);

    const applied: TlsMaterial[] = [];
    const warnings: string[] = [];
    const infos: string[] = [];
    const watch = watchTlsFiles({
      current: loadTlsMaterial(files),
      files: async () => files,
      apply: async (m) => void applied.push(m),
      intervalMs: 30,
      log: { info: (m) => infos.push(m), warn: (m) => warnings.push(m) },
    });
    try {
      await Bun.sleep(150);
      expect({ applied: applied.length, warnings, infos }).toEqual({ applied: 0, warnings: [], infos: [] });

      // The certificate moves on, the key not yet: refused, reported once over several looks.
      relink(join(archive, "fullchain2.pem"), files.cert);
      await Bun.sleep(200);
      expect(applied.length).toBe(0);
      expect(warnings).toEqual([`TLS certificate not reloaded, the current one stays in use: tls.key ${files.key} does not belong to the certificate in tls.cert ${files.cert}`]);
      expect(await watch.check()).toBe("refused");

      relink(join(archive, "privkey2.pem"), files.key);
      const deadline = Date.now() + 5000;
      while (!applied.length && Date.now() < deadline) await Bun.sleep(20);
      expect(applied.map((m) => m.summary.split(",")[0])).toEqual(["CN=two.test"]);
      expect(infos).toHaveLength(1);
      expect(infos[0]).toStartWith(`TLS certificate reloaded from ${files.cert}: CN=two.test, valid until `);
      expect(await watch.check()).toBe("unchanged");
      expect(applied).toHaveLength(1);
    } finally {
      watch.stop();
    }
  });

  test("a failing apply keeps the current pair, is reported once and tried again at each look", async () => {
    const a = await makeCert(join(dir, "apply-a"), "a.test");
    const b = await makeCert(join(dir, "apply-b"), "b.test");
    const files = { cert: join(dir, "apply-cert.pem"), key: join(dir, "apply-key.pem") };
    copyFileSync(a.cert, files.cert);
    copyFileSync(a.key, files.key);
    let fail = true;
    const warnings: string[] = [];
    const watch = watchTlsFiles({
      current: loadTlsMaterial(files),
      files: async () => files,
      apply: async () => {
        if (fail) throw new Error("port taken");
      },
      intervalMs: 60_000,
      log: { info: () => {}, warn: (m) => warnings.push(m) },
    });
    try {
      copyFileSync(b.cert, files.cert);
      copyFileSync(b.key, files.key);
      expect(await watch.check()).toBe("refused");
      expect(await watch.check()).toBe("refused");
      expect(warnings).toEqual(["TLS certificate not reloaded, the current one stays in use: port taken"]);
      fail = false;
      expect(await watch.check()).toBe("reloaded");
      expect(await watch.check()).toBe("unchanged");
    } finally {
      watch.stop();
    }
  });
});
