"""Auditors verify the ledger in their browser: the page's JavaScript checks the inclusion proof and the
checkpoint's Ed25519 signature with WebCrypto, and reports failure when what the server sends is altered.
The JavaScript verifier is also held to the Python implementation's vectors (ledger.merkle, ledger.signing)."""
import base64
import json
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.contrib.auth.models import Group, User

from ledger import merkle
from ledger.services import create_checkpoint, record_event
from ledger.signing import Signer
from tests.second_factor import current_code, enrol_authenticator

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"


@pytest.fixture
def ledger():
    for i in range(11):
        record_event(kind="expert.contributed", payload={"expert": f"expert:{i}", "note": "café"}, actor="contributor:1")
        if i in (4, 10):
            create_checkpoint()


@pytest.fixture
def auditor_page(page, live_server):
    """An auditor signed in with the password, then the code of their authenticator (auditors must)."""
    user = User.objects.create_user("audrey", password=PASSWORD)
    user.groups.add(Group.objects.get_or_create(name="auditors")[0])
    device = enrol_authenticator(user)
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "audrey")
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/account/two-factor/verify/**")
    page.fill("input[name=code]", current_code(device))
    page.get_by_role("button", name="Continue").click()
    page.wait_for_load_state()
    return page


def verification(page):
    result = page.locator("#verification:not([data-status=running])")
    result.wait_for()
    return result.get_attribute("data-status"), result.inner_text()


def test_an_auditor_sees_the_entry_proof_and_signature_verified_in_the_browser(auditor_page, live_server, ledger):
    auditor_page.goto(f"{live_server.url}/ledger/entries/6/")

    status, text = verification(auditor_page)

    assert status == "verified", text
    assert "✓ the checkpoint's Ed25519 signature verifies with the verifier key" in text
    assert "✓ the inclusion proof leads from the leaf to the signed root (RFC 9162)" in text


def _tamper(page, url_glob, change):
    def handle(route):
        response = route.fetch()
        body = response.json()
        change(body)
        route.fulfill(response=response, json=body)

    page.route(url_glob, handle)


def _flip_first_byte(b64_text: str) -> str:
    raw = bytearray(base64.b64decode(b64_text))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def test_an_altered_inclusion_proof_fails_in_the_browser(auditor_page, live_server, ledger):
    def alter(body):
        body["inclusion"]["proof"][0] = _flip_first_byte(body["inclusion"]["proof"][0])

    _tamper(auditor_page, "**/api/ledger/entries/6", alter)
    auditor_page.goto(f"{live_server.url}/ledger/entries/6/")

    status, text = verification(auditor_page)

    assert status == "failed"
    assert "✗ the inclusion proof leads from the leaf to the signed root (RFC 9162): the proof does not lead" in text
    assert "✓ the checkpoint's Ed25519 signature verifies" in text


def test_an_altered_entry_or_checkpoint_fails_in_the_browser(auditor_page, live_server, ledger):
    def alter(body):
        body["leaf_data"] = body["leaf_data"].replace("expert:6", "expert:7")
        text, _, signatures = body["inclusion"]["checkpoint"].partition("\n\n")
        body["inclusion"]["checkpoint"] = text.replace("\n11\n", "\n12\n") + "\n\n" + signatures

    _tamper(auditor_page, "**/api/ledger/entries/6", alter)
    auditor_page.goto(f"{live_server.url}/ledger/entries/6/")

    status, text = verification(auditor_page)

    assert status == "failed"
    assert "✗ the leaf hash is SHA-256(0x00 || canonical JSON)" in text
    assert "✗ the checkpoint's Ed25519 signature verifies with the verifier key: the signature by" in text


def test_two_checkpoints_are_checked_for_consistency_in_the_browser(auditor_page, live_server, ledger):
    auditor_page.goto(f"{live_server.url}/ledger/checkpoints/")
    auditor_page.get_by_role("button", name="Verify consistency in this browser").click()

    result = auditor_page.locator("#consistency-result[data-status]")
    result.wait_for()

    assert result.get_attribute("data-status") == "verified", result.inner_text()
    assert "✓ the consistency proof extends the first signed tree to the second" in result.inner_text()


def test_the_javascript_verifier_agrees_with_the_python_vectors(page, live_server, db):
    rng = random.Random(15)
    leaves = [rng.randbytes(rng.randrange(0, 40)) for _ in range(13)]
    inclusion, consistency = [], []
    for size in range(1, len(leaves) + 1):
        root = merkle.root_hash(leaves[:size])
        for index in range(size):
            proof = merkle.inclusion_proof(leaves[:size], index)
            inclusion.append([index, size, [p.hex() for p in proof], root.hex(), leaves[index].hex(), True])
            if proof:
                bad = [bytes([proof[0][0] ^ 1]) + proof[0][1:]] + proof[1:]
                assert not merkle.verify_inclusion(leaves[index], index, size, bad, root)
                inclusion.append([index, size, [p.hex() for p in bad], root.hex(), leaves[index].hex(), False])
        for old in range(0, size + 1):
            proof = merkle.consistency_proof(leaves[:size], old)
            old_root = merkle.root_hash(leaves[:old])
            consistency.append([old, size, old_root.hex(), root.hex(), [p.hex() for p in proof], True])
            if proof:
                bad = proof[:-1] + [bytes([proof[-1][0] ^ 1]) + proof[-1][1:]]
                assert not merkle.verify_consistency(old, size, old_root, root, bad)
                consistency.append([old, size, old_root.hex(), root.hex(), [p.hex() for p in bad], False])
    # a key whose base64 holds a '+', as about one key in three does (the verifier key's separator)
    signer = next(s for s in (Signer(name="mosaic.local/ledger", private_key=Ed25519PrivateKey.from_private_bytes(
        bytes([seed]) * 32)) for seed in range(256)) if "+" in s.verifier_key.split("+", 2)[2])
    note = signer.sign("mosaic.local/ledger\n13\n" + base64.b64encode(merkle.root_hash(leaves)).decode() + "\n")
    stranger = Signer(name=signer.name, private_key=Ed25519PrivateKey.generate()).sign("mosaic.local/ledger\n1\nAAAA\n")

    page.goto(f"{live_server.url}/transparency/")
    page.add_script_tag(url="/static/mosaic/ledger-verify.js")
    results = page.evaluate(
        """async ([inclusion, consistency, note, stranger, key]) => {
          const V = LedgerVerify, h = V.fromHex;
          const inc = [];
          for (const [index, size, proof, root, leaf] of inclusion)
            inc.push(await V.verifyInclusion(h(leaf), index, size, proof.map(h), h(root)));
          const con = [];
          for (const [old, size, oldRoot, root, proof] of consistency)
            con.push(await V.verifyConsistency(old, size, h(oldRoot), h(root), proof.map(h)));
          const opened = V.parseCheckpoint(await V.openNote(note, key));
          let strangerError = null;
          try { await V.openNote(stranger, key); } catch (error) { strangerError = error.message; }
          return {inc, con, size: opened.treeSize, root: V.toHex(opened.rootHash), strangerError};
        }""",
        [inclusion, consistency, note, stranger, signer.verifier_key],
    )

    assert results["inc"] == [row[-1] for row in inclusion]
    assert results["con"] == [row[-1] for row in consistency]
    assert (results["size"], results["root"]) == (13, merkle.root_hash(leaves).hex())
    assert results["strangerError"] == f"the note carries no signature by {signer.name}"
    assert json.dumps(results["inc"]).count("false") == sum(1 for row in inclusion if not row[-1]) > 0
