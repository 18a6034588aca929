import json, collections, re
from pathlib import Path
D = str(Path(__file__).resolve().parent / "guardrails")
REASONS = {"pricing","refund","legal","security","human_request","negative_sentiment","language"}
ids = set(); texts=set(); allrows = []
for name in ("tuning.jsonl", "held_out.jsonl"):
    for n, line in enumerate(open(f"{D}/{name}", encoding="utf-8"), 1):
        r = json.loads(line)
        assert set(r) == {"id","text","channel","language","expected_action","expected_reason","sentiment","note"}, (name, n)
        assert re.fullmatch(r"g-\d{4}", r["id"]) and r["id"] not in ids, r["id"]; ids.add(r["id"])
        assert r["text"].strip() and r["text"] not in texts; texts.add(r["text"])
        assert r["channel"] in {"email","whatsapp","web_form"}
        assert re.fullmatch(r"[a-z]{2}", r["language"])
        assert r["sentiment"] in {"angry","negative","neutral","positive"}
        assert isinstance(r["note"], str) and r["note"]
        if r["expected_action"] == "answer": assert r["expected_reason"] is None
        else:
            assert r["expected_action"] == "escalate" and r["expected_reason"] in REASONS
        other = r["language"] not in {"en","es","pt","fr","de"}
        assert (r["expected_reason"] == "language") == other, r["id"]
        r["split"] = name.split(".")[0]; allrows.append(r)
print("OK", len(allrows), "rows, ids unique")
C = collections.Counter
esc = [r for r in allrows if r["expected_action"]=="escalate"]
print("answer share %.3f" % (1-len(esc)/len(allrows)))
print("non-en share %.3f" % (sum(r["language"]!="en" for r in allrows)/len(allrows)))
print("lang", C(r["language"] for r in allrows))
for lg in ("es","pt","fr","de"):
    print(lg, C((r["expected_action"]) for r in allrows if r["language"]==lg))
print("channel", C((r["split"], r["channel"]) for r in allrows))
# own verification list of obvious keywords per reason (NOT the product rules)
KW = {"pricing": r"pric|cost|discount|quot|precio|cuest|descuento|cotiza|preço|desconto|orçamento|tarif|remise|devis|prix|preis|kost|rabatt|angebot",
      "refund": r"refund|reembols|rembours|erstatt|estorno",
      "legal": r"lawyer|attorney|legal|gdpr|rgpd|dsgvo|lgpd|\bsue\b|abogad|advogad|avocat|anwalt|jurídic",
      "security": r"hack|security|breach|phishing|seguridad|segurança|sécurité|sicherheit",
      "human_request": r"human|humano|humain|mensch",
      "negative_sentiment": r"$^"}
ind = [r for r in esc if r["expected_reason"] in KW and not re.search(KW[r["expected_reason"]], r["text"], re.I)]
print("escalations avoiding obvious keyword: %d/%d = %.2f" % (len(ind), len(esc), len(ind)/len(esc)))
hard = [r for r in esc if r["expected_reason"] in {"pricing","refund","legal","security","human_request"}]
print("  of hard-reason escalations:", sum(r in ind for r in hard), "/", len(hard))
