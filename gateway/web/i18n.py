"""The citizen pages in English and Traditional Chinese (Hong Kong)."""
from __future__ import annotations

LANGS = ("en", "zh-HK")

TEXT = {
    "en": {
        "title": "Consented Data Exchange Gateway",
        "login.heading": "Log in with iAM Smart",
        "login.note": "This is a simulated iAM Smart login for the CDEG demonstration.",
        "login.hkid": "HKID",
        "login.hkid_hint": "For example A123456(3)",
        "login.submit": "Log in",
        "login.error.format": "HKID must be like A123456(3)",
        "login.error.check_digit": "HKID check digit does not match",
        "login.error.unavailable": "iAM Smart cannot be reached just now; try again shortly",
        "code.heading": "Confirm it is you",
        "code.note": "Enter the 6-digit code sent to your iAM Smart app.",
        "code.demo": "Demo mode: your code is",
        "code.code": "Code",
        "code.submit": "Verify",
        "code.error.start_again": "start again: enter your HKID first",
        "code.error.expired": "the code has expired; start again",
        "code.error.mismatch": "the code does not match",
        "code.error.too_many": "Too many wrong codes have been entered for this HKID. Try again "
                               "in {minutes} min, or from a browser you have logged in with "
                               "before.",
        "consent.heading": "Share your data?",
        "consent.who": "Who is asking",
        "consent.why": "Why",
        "consent.what": "What would be shared",
        "consent.how_long": "For how long",
        "consent.once": "One read only, then the consent ends",
        "consent.until": "Until",
        "consent.revoke_later": "You can revoke this consent at any time on your consents page.",
        "consent.approve": "Approve",
        "consent.decline": "Decline",
        "consent.not_available": "(not available from the source)",
        "consent.verified": "verified",
        "consent.self_declared": "self-declared",
        "me.heading": "My consents",
        "me.none": "You have not given any consent yet.",
        "me.requester": "Requester",
        "me.purpose": "Purpose",
        "me.items": "Data items",
        "me.status": "Status",
        "me.expires": "Expires",
        "me.access_log": "Access log",
        "me.no_access": "No one has read data under this consent.",
        "me.proof": "proof it is in the public log",
        "me.pages": "More consents",
        "me.newer": "Newer consents",
        "me.older": "Older consents",
        "me.proof_pending": "not yet in the public log",
        "me.log_entries": "This consent's entries in the audit log",
        "me.revoke": "Revoke",
        "me.revoked_notice": "Consent revoked. No more data will be shared under it.",
        "me.logout": "Log out",
        "status.approved": "Active",
        "status.revoked": "Revoked",
        "status.expired": "Expired",
        "status.declined": "Declined",
        "status.requested": "Awaiting your answer",
        "error.heading": "Something is not right",
        "error.internal": "The gateway could not complete the request. Try again later.",
        "error.bad_request": "The request could not be understood.",
        "error.csrf": "The form expired or did not come from this site; reload the page.",
        "error.not_found": "There is no such page or consent.",
        "error.consent_state": "This consent cannot be changed that way any more.",
        "error.too_many": "Too many attempts from here. Try again in {minutes} min.",
        "error.too_large": "What was sent is too large.",
        "error.method": "This page cannot be used that way.",
        "error.unavailable": "A service the gateway needs did not answer. Try again shortly.",
        "error.contention": "A concurrent change to the same record won; try again.",
        "error.back": "Back to my consents",
        "lang.switch": "中文",
        "skip": "Skip to content",
    },
    "zh-HK": {
        "title": "經同意數據交換閘道",
        "login.heading": "以「智方便」登入",
        "login.note": "這是經同意數據交換閘道示範用的模擬「智方便」登入。",
        "login.hkid": "HKID",
        "login.hkid_hint": "例如 A123456(3)（香港身份證號碼）",
        "login.submit": "Log in",
        "login.error.format": "香港身份證號碼應如 A123456(3)",
        "login.error.check_digit": "香港身份證號碼的檢查碼不符",
        "login.error.unavailable": "暫時未能連接「智方便」，請稍後再試",
        "code.heading": "確認身份",
        "code.note": "請輸入傳送到你「智方便」應用程式的 6 位數字驗證碼。",
        "code.demo": "示範模式：你的驗證碼是",
        "code.code": "Code",
        "code.submit": "Verify",
        "code.error.start_again": "請重新開始：先輸入你的香港身份證號碼",
        "code.error.expired": "驗證碼已失效，請重新開始",
        "code.error.mismatch": "驗證碼不正確",
        "code.error.too_many": "此香港身份證號碼已輸入太多次錯誤的驗證碼。請於 {minutes} 分鐘後"
                               "再試，或使用你曾經登入的瀏覽器。",
        "consent.heading": "是否分享你的資料？",
        "consent.who": "要求者",
        "consent.why": "目的",
        "consent.what": "將會分享的資料",
        "consent.how_long": "期限",
        "consent.once": "只可讀取一次，其後同意即告結束",
        "consent.until": "直至",
        "consent.revoke_later": "你可隨時在「我的同意」頁面撤回此同意。",
        "consent.approve": "Approve",
        "consent.decline": "Decline",
        "consent.not_available": "（資料來源未能提供）",
        "consent.verified": "已核實",
        "consent.self_declared": "自行申報",
        "me.heading": "我的同意",
        "me.none": "你尚未給予任何同意。",
        "me.requester": "要求者",
        "me.purpose": "目的",
        "me.items": "資料項目",
        "me.status": "狀態",
        "me.expires": "屆滿",
        "me.access_log": "存取紀錄",
        "me.no_access": "未有人根據此同意讀取資料。",
        "me.proof": "已載入公開紀錄的證明",
        "me.pages": "更多同意",
        "me.newer": "較新的同意",
        "me.older": "較舊的同意",
        "me.proof_pending": "尚未載入公開紀錄",
        "me.log_entries": "此同意在審計紀錄中的項目",
        "me.revoke": "Revoke",
        "me.revoked_notice": "同意已撤回，不會再根據此同意分享任何資料。",
        "me.logout": "登出",
        "status.approved": "生效中",
        "status.revoked": "已撤回",
        "status.expired": "已屆滿",
        "status.declined": "已拒絕",
        "status.requested": "等待你的回覆",
        "error.heading": "出現問題",
        "error.internal": "閘道未能完成這項要求，請稍後再試。",
        "error.bad_request": "未能理解這項要求。",
        "error.csrf": "表格已失效或並非來自本網站，請重新載入頁面。",
        "error.not_found": "沒有這個頁面或同意。",
        "error.consent_state": "這項同意已不能這樣更改。",
        "error.too_many": "嘗試次數太多，請於 {minutes} 分鐘後再試。",
        "error.too_large": "傳送的內容太大。",
        "error.method": "此頁面不能這樣使用。",
        "error.unavailable": "閘道所需的服務未有回應，請稍後再試。",
        "error.contention": "同一紀錄剛被同時更改，請再試一次。",
        "error.back": "返回我的同意",
        "lang.switch": "English",
        "skip": "跳至內容",
    },
}

# The accessible names of the controls (HKID, Code, Log in, Verify, Approve, Decline, Revoke)
# are fixed by the contract in both languages; the Chinese text is shown beside them.
CONTROL_ZH = {"login.submit": "登入", "code.submit": "核實", "consent.approve": "批准",
              "consent.decline": "拒絕", "me.revoke": "撤回", "login.hkid": "香港身份證號碼",
              "code.code": "驗證碼"}


def pick(requested: str | None, remembered: str | None) -> str:
    for lang in (requested, remembered):
        if lang in LANGS:
            return lang
    return "en"


def translator(lang: str):
    table = TEXT[lang]

    def t(key: str) -> str:
        return table.get(key) or TEXT["en"].get(key, key)

    def zh(key: str) -> str:
        return CONTROL_ZH.get(key, "") if lang == "zh-HK" else ""
    return t, zh
