"""The degenerate-response guard: responses that say nothing score 0 before any model call.

A response is content-free when, once its form is taken away, nothing is left that could satisfy a
rubric. Its form is: markup (tags, empty reasoning blocks, code fences), formatting (markdown marks,
bullets, list numbers), punctuation and symbols, echoed labels and rubric references ("support",
"Rubric 2:", ``r3``), and the discourse that opens or frames an answer ("let me think", "step by step",
"here is the answer", "according to the retrieved passages"). What is left must carry content: a number,
or a word that is neither a meta/discourse word nor a function word. The rule is structural; the lexicon
below lists WORDS, in several languages, never phrases, so "Réfléchissons étape par étape" and "Let us
carefully work through it" are recognised without being written down anywhere.

The guard never fires on a genuine answer, however short: "Yes.", "42", "Paris", "Nein", "北京", "It is."
(function words alone, with no meta word, are a short answer, not an opener); an answer that closes its
clause stays content where it spells a function word ("Answer: A", "The answer is no.", "答案：是的").
Scripts written without spaces (Han, kana, Thai, ...) are read by stripping known meta and function
strings from each run: what remains is content. A short opener clause that ends in ":" with nothing
after it introduces content that never comes, whatever its language ("Jibu:").
"""

from __future__ import annotations

import re
import unicodedata

DEGENERATE = "degenerate"

# Meta / discourse words: openers, reasoning and answer framing, retrieval framing, filler, the judging
# vocabulary (labels, rubric, instructions). Space-separated; casefolded NFKC.
_META = """
let lets think thinking thought thoughts reason reasoning reasons step steps stepwise solve solving solved
solution solutions problem problems question questions answer answers answered answering response responses
respond result results here final finally first firstly second secondly next then now begin beginning
start starting okay ok alright sure certainly course absolutely great good fine well hmm hm um uh umm erm
ah oh analyze analyse analysis analyzing analysing explanation explain explaining consider considering
look looking carefully careful break breaking approach approaching below following follows given based
information context provided retrieved retrieve documents document sources source passages passage
search searched searching according summary summarize summarise conclusion overview note notes attempt
try trying go going work working figure figuring understand understanding see determine determining find
finding calculate calculating compute evaluate evaluating examine examining review reviewing detailed
detail details comprehensive brief briefly short quick simple simply process processing task query request
thanks thank happy help glad need needs carefully logically systematically methodically thoroughly
rubric rubrics criterion criteria nugget nuggets label labels labelled labeled support supports supported
supporting partial partially partial_support not_support ignore ignored previous prior instructions
instruction mark rate grade output judge judgement judgment verifier evaluator assistant system user json
every all each lorem ipsum dolor sit amet consectetur adipiscing blah etc ellipsis reply replying tldr tl dr
ask asking asked provide providing research researched relevant web fully satisfy satisfies satisfied
hello hi hey greetings placeholder null undefined
vamos pensar pensemos piensa paso pasos resolver resolvamos problema respuesta solución solucion pregunta
aquí aqui primero analicemos veamos razonamiento razonemos análisis analisis explicación según
réponse reponse étape etape étapes pensons réfléchissons reflechissons réflexion reflexion voici voilà
problème probleme résolvons resolvons analysons abord selon raisonnement commençons commencons
antwort lösung losung schritt schritten lass lasst uns denken nachdenken überlegen uberlegen hier frage
lösen losen zuerst zunächst analyse erklärung gemäß überlegung schauen
resposta solução solucao passo passos pensamos raciocínio raciocinio primeiro pergunta analisar
risposta soluzione pensiamo ragioniamo ecco domanda ragionamento primo analizziamo
antwoord oplossing stap stappen denken laten vraag eerst redenering
cevap yanıt yanit çözüm cozum adım adim düşünelim dusunelim soru önce
jawaban solusi langkah mari kita berpikir pikirkan pertanyaan pertama
trả lời giải pháp bước hãy suy nghĩ câu hỏi
odpowiedź odpowiedz rozwiązanie rozwiazanie krok pomyślmy pomyslmy pytanie najpierw
ответ ответа решение шаг шагом шагам шаги давайте подумаем рассуждение вопрос задача сначала итак
разберём разберем
відповідь рішення крок давайте подумаємо питання
الإجابة الاجابة الجواب إجابة الحل حل خطوة بخطوة لنفكر دعنا دعونا نفكر السؤال أولا التفكير
תשובה פתרון שלב בשלב בואו נחשוב
उत्तर जवाब हल चरण दर आइए सोचते सोचें प्रश्न समाधान
উত্তর সমাধান ধাপে চলুন ভাবি
답 답변 정답 해결 단계 단계별로 생각 생각해 봅시다 보자 풀이 질문 먼저 차근차근
ομαδα απάντηση λύση βήμα ας σκεφτούμε
fourni fournie fournis fournies donné donnée données informations contexte documents recherche extraits
proporcionado proporcionada proporcionados proporcionadas fuentes documentos información informacion
contexto datos dados fornecido fornecidos fornecidas fontes informações informacoes
bereitgestellt bereitgestellten quellen dokumente informationen kontext laut basierend gegeben
fornito forniti fornite fonti documenti informazioni contesto secondo
verstrekte bronnen documenten informatie
источники источников источникам документы документов предоставленные предоставленных согласно
информация информации контекст контекста
sumber dokumen informasi konteks diberikan berdasarkan menurut
kaynaklar kaynaklara belgeler bilgiler göre
źródła źródeł dokumenty informacje według
المصادر المستندات المعلومات السياق وفقا وفقًا
स्रोत स्रोतों दस्तावेज़ जानकारी अनुसार आधार
svar svaret lösning lösningen steg tänka tänk fråga frågan först enligt källor källorna
svaret løsning løsningen trin tænke tænk spørgsmål først ifølge kilder kilderne tenke tenk spørsmål kildene
odpověď řešení krok krokem krocích zamysleme promysleme promyslet otázka nejprve podle zdroje zdrojů
vastaus ratkaisu vaihe vaiheelta ajatellaan mietitään kysymys ensin mukaan lähteet lähteiden
válasz megoldás lépés lépésről lépésre végig gondoljuk gondolkodjunk kérdés először szerint források
پاسخ راه حل مرحله گام بیایید فکر کنیم سوال پرسش ابتدا طبق منابع
jibu suluhisho hatua tufikirie fikiria swali kwanza kulingana vyanzo
sagot solusyon hakbang isipin pag isipan tanong una ayon pinagmulan
răspuns răspunsul soluție soluția pas gândim să gândi întrebare întrebarea mai întâi conform surse
جواب حل مرحلہ قدم آئیے سوچتے سوچیں سوال پہلے مطابق ذرائع
பதில் தீர்வு படி படியாக படிப்படியாக யோசிப்போம் கேள்வி முதலில்
"""
# Function words: neutral, neither content nor meta ("It is." is an answer; "Here is the answer." is not).
_FUNCTION = """
a an the is are was were be been being am it its this that these those there to of for and or so by on in
at as with from into onto about through after before up down out over my our your their me us we i you
he she they
will would can could should shall may might must do does did have has had s ll d re ve t m let's
what which who how why when where whether if than very just also really please shall
el la los las un una es está esta son de del por para y o con en lo que al su sus mi
le les une un est et ou du des par pour avec dans en ce cette ces d l je nous on qu que à
der die das ein eine ist sind und oder von für fur mit in im auf zu wir ich es den dem des
o a os as um uma é e ou de do da em para com no na que
il lo gli le un una è e o di del della per con in che
de het een is en of van voor met in we ik
bir ve veya bu şu için ile
ini itu dan atau dari untuk dengan di yang adalah
là và hoặc của cho với trong chúng ta tôi
i oraz lub z do w na się to jest
и или в на с по к это мы я за вот
і або в на з це ми я
و أو في من على إلى هذا هذه هنا هو هي
ו או של את זה
और या का की के में से यह है हैं को
এবং বা এর এই হয়
은 는 이 가 을 를 에 의 로 으로 해 합시다 하자 하겠습니다
και ή του της το να
après avant sur sous chez entre vers sans mais donc car ni il elle ils elles vous tu te se me mon ma mes
ton ta tes son sa ses notre nos votre vos leur leurs y ne être avoir a ont sont était fait faire va
allons peut doit aux au très comme quand où qui quoi dont ceci cela ça
sobre entre hacia desde sin pero como cuando donde quien nosotros vamos a ser estar hay este esta estos
voy vas va podemos puede debe muy más mas también tambien ahora se me te nos les le
nach vor über uber unter zwischen ohne aber wie wenn wo wer sein haben hat ist war wird werden kann
muss sie er ihr uns mal jetzt nun noch auch sehr dies diese dieser dieses einen einem einer
sobre entre sem mas como quando onde quem nós nos ser estar há este esta isto vou vai vamos pode deve
muito mais também tambem agora se me te lhe pelo pela pelos pelas ao aos num numa
sul sulla sui dopo prima senza ma come quando dove chi noi essere avere ha sono questo questa
facciamo andiamo può deve molto più anche ora ci mi ti al allo alla ai agli alle dal dalla nel nella
na naar voor over onder tussen zonder maar hoe wanneer waar wie wij zijn hebben heeft dit deze die dat
laten gaan kan moet zeer ook nu het
sonra önce üzerinde arasında ama nasıl ne zaman nerede kim biz ben sen o olarak şimdi de da çok daha
ile gibi
akan sudah telah sedang oleh pada ke kami saya anda kamu mereka dia bagaimana apa kapan mana siapa
secara sangat lebih juga sekarang demi per sebagai tentang
sau trước trên dưới giữa nhưng như khi đâu ai chúng mình là có được sẽ đã đang rất hơn cũng bây giờ
theo về
po przed nad pod między bez ale jak kiedy gdzie kto my ja ty być mieć jest są ten ta te tego teraz
bardzo więcej też także zrobimy
после перед над под между без но как когда где кто мы вы ты он она они быть есть будет был было
может можно нужно надо очень более также тоже теперь сейчас этот эта эти этого по для от до из о об
після перед над під між без але як коли де хто ви ти він вона вони бути є може можна дуже також тепер
цей ця ці для від до із про
بعد قبل عن مع لكن كيف متى أين من نحن أنا أنت هو هي كان يكون يمكن جدا أيضا الآن ذلك تلك التي الذي
אחרי לפני על עם אבל איך מתי איפה מי אנחנו אני אתה הוא היא היה יכול מאוד גם עכשיו
लिए बाद पहले पर तक साथ लेकिन कैसे कब कहाँ कौन हम मैं आप वह वे था थी थे होगा सकते सकता बहुत भी
अब तो ही ने कर करते करें करना करेंगे इस उस एक
পরে আগে উপর সাথে কিন্তু কিভাবে কখন কোথায় কে আমরা আমি আপনি সে তারা ছিল হবে খুব ও এখন
후 전 위 와 과 하지만 어떻게 언제 어디 누가 우리 나 저 당신 그 그녀 있다 있습니다 없다 매우 또한 지금 도 만
μετά πριν πάνω με αλλά πώς πότε πού ποιος εμείς εγώ εσύ αυτός αυτή είναι ήταν θα μπορεί πολύ επίσης τώρα
låt oss för att och eller av på i med till det den är vi jag här nu
lad os for at og eller af på i med til det den er vi jeg her nu la oss
pojďme si se na v a za nebo z do k to je jsme já tady teď
käydään läpi ja tai on me minä tämä nyt
nézzük meg a az és vagy egy ez itt most
بیایید را به از در و یا این که است ما من
tu na ya wa kwa katika ni hii sisi mimi sasa
tayo natin ang ng sa at o ay ito kami ako ngayon mga
să ne și sau de la în cu pe este noi eu aici acum
کے کی کا میں سے اور یا یہ ہے ہیں ہم بہ
நாம் இது மற்றும் அல்லது
"""
# Polar answers in scripts without spaces are content ("答案：是的"), though their characters are function
# characters elsewhere.
_CJK_ANSWER = "是的 不是 没有 沒有 对 對 不对 不對 否 はい いいえ"
# Strings stripped from runs of scripts written without spaces; meta ones first, longest first.
_CJK_META = """
让我们一步一步地 一步一步地 一步一步 一步步 逐步 思考过程 思考 思路 推理过程 推理 解题思路 解题 解答 解决 问题
答案 回答 答 解析 解 分析 首先 步骤 第一步 好的 嗯 我们来 我来 想一想 想想 过程 结论 总结 根据 检索 文档 资料
讓我們 一步一步地 思考過程 問題 答案 回答 解決 步驟 首先 好的
答え 回答 解答 解説 かいせつ こたえ 解き方 考え方 考えて 考えましょう 考えます 考える 思考
ステップバイステップ ステップ 段階 順番
一歩ずつ 一つずつ 順を追って 問題 質問 まず 最初に 解 答 では それでは えーと ええと うーん 分析 説明 結論
คำตอบ ทีละขั้นตอน ขั้นตอน มาคิด คิด คำถาม วิธีแก้
"""
_CJK_FUNCTION = """
的 是 了 我 们 們 来 來 吧 让 讓 地 这 這 个 個 一 下 看 说 說 个 要 我们 我們
は を が の に て で と も ます ましょう しょう です よう する します して
ね よ か な れ さ 一 つ ずつ ず ご ください 下さい
มา กัน ครับ ค่ะ นะ
"""

# Inflections read as their lexicon word ("steps", "asking", "resolverlo", "fournies", "разберёмся",
# "шагам"): endings that change the form of a word, not what it is. Derivations ("documentary",
# "problematic", "workers") are not endings here and stay content.
_ENDINGS = ("s", "es", "ed", "ing", "ly", "lo", "la", "los", "las", "nos", "mos", "ies", "ée", "ées",
            "ся", "сь", "ам", "ом", "ами", "ах")  # fmt: skip

META = frozenset(_META.casefold().split())
FUNCTION = frozenset(_FUNCTION.casefold().split())
CJK_ANSWER = tuple(_CJK_ANSWER.split())
CJK_META = tuple(sorted(set(_CJK_META.split()), key=len, reverse=True))
CJK_FUNCTION = tuple(sorted(set(_CJK_FUNCTION.split()), key=len, reverse=True))

_LABEL = re.compile(r"\b(?:not|partial(?:ly)?)[\s_-]?support(?:ed|s)?\b", re.I)
_TAG = re.compile(r"</?[A-Za-z][\w:-]{0,30}(?:\s[^<>]{0,200})?/?>|<!--.*?-->", re.S)
# A rubric / label reference with its index: "Rubric 1", "criterion #2", "rubric_3", "r4", "[5]", "(6)";
# the index is form, not content.
_REFERENCE = re.compile(
    r"\b(?:rubrics?|criteri(?:on|a)|nuggets?|labels?|items?|steps?|schritt|paso|étape|etape|шаг|r)"
    r"[\s#:_-]*\d{1,3}\b|[\[(]\d{1,3}[\])]",
    re.I,
)
# A list number that opens a line and is followed by text: "1. support"; a bare "42." stays content.
_ENUMERATOR = re.compile(r"(?m)^\s*\d{1,3}[.):]\s+(?=\S)")
# A list skeleton: lines holding a list number alone ("1.\n2.\n3."); one such line ("42.") is an answer.
_BARE_ENUMERATOR = re.compile(r"(?m)^\s*\d{1,3}[.)]\s*$")
# An answer that ends its clause is content even where it spells a function word: a choice letter
# ("Answer: A", "(B)", "Option C.") or a polar "no" ("The answer is no.", "La respuesta es no."; the
# Portuguese "no" of "pensar no problema" is followed by its noun and stays a function word). "A
# step-by-step approach" keeps "A" an article.
_CLAUSE_FINAL_ANSWER = re.compile(r"(?<![\w'])(?:[A-Z]|(?i:no))(?=\s*(?:[.)\],;!?]|$))(?!\.\w)", re.M)
_NO_SPACE_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN")
_DANGLING = re.compile(r":\s*$")


def _is_word_char(char: str) -> bool:
    return unicodedata.category(char)[0] in "LMN"


def _tokens(text: str) -> list[str]:
    """Runs of letters, marks and digits (so Devanagari vowel signs stay inside their word)."""
    tokens, current = [], []
    for char in text:
        if _is_word_char(char):
            current.append(char)
        elif current:
            tokens.append("".join(current))
            current = []
    if current:
        tokens.append("".join(current))
    return tokens


def _no_space_script(token: str) -> bool:
    return any(unicodedata.name(char, "").startswith(_NO_SPACE_SCRIPTS) for char in token)


def _strip_all(token: str, parts: tuple[str, ...]) -> tuple[str, bool]:
    stripped = False
    for part in parts:
        if part in token:
            token, stripped = token.replace(part, ""), True
    return token, stripped


def _kinds(token: str) -> set[str]:
    """What a token is: {"content"}, {"meta"}, {"function"}, or both of the last two for a no-space run."""
    if any(unicodedata.category(char)[0] == "N" for char in token):
        return {"content"}  # a number, in any script
    if _no_space_script(token):
        if any(answer in token for answer in CJK_ANSWER):
            return {"content"}
        rest, meta = _strip_all(token, CJK_META)
        rest, _ = _strip_all(rest, CJK_FUNCTION)
        if rest:
            return {"content"}
        return {"meta"} if meta else {"function"}
    word = token.casefold()
    if word in META or _inflected(word, META):
        return {"meta"}
    if word in FUNCTION:
        return {"function"}
    return {"content"}


def _inflected(word: str, lexicon: frozenset[str]) -> bool:
    """Whether ``word`` is a lexicon word of three letters or more plus one of :data:`_ENDINGS`."""
    return any(
        word.endswith(ending) and len(word) - len(ending) >= 3 and word[: -len(ending)] in lexicon
        for ending in _ENDINGS
    )


def content_tokens(response: str) -> tuple[list[str], bool]:
    """The tokens of ``response`` that carry content, and whether any of its form was meta (openers,
    labels, rubric references, markup)."""
    text = unicodedata.normalize("NFKC", response).replace("\u2019", "'").replace("\u02bc", "'")
    stripped = _TAG.sub(" ", text)
    meta = stripped != text  # markup alone is form: an empty <think></think> says nothing
    if len(_BARE_ENUMERATOR.findall(stripped)) > 1:  # a list skeleton is form
        stripped, meta = _BARE_ENUMERATOR.sub(" ", stripped), True
    unlabelled = _LABEL.sub(" ", _ENUMERATOR.sub(" ", stripped)).replace("_", " ")
    referenced = _REFERENCE.sub(" ", unlabelled)
    meta = meta or referenced != stripped.replace("_", " ")
    content: list[str] = _CLAUSE_FINAL_ANSWER.findall(referenced)
    for token in _tokens(_CLAUSE_FINAL_ANSWER.sub(" ", referenced)):
        kinds = _kinds(token)
        if "content" in kinds:
            content.append(token)
        meta = meta or "meta" in kinds
    return content, meta


def is_degenerate(response: str | None) -> bool:
    """True for a response with no content: empty, only punctuation/symbols/markup, or nothing beyond
    openers, filler, formatting and echoed labels, in any language; or a short clause left dangling on
    ":" with nothing after it."""
    if response is None:
        return True
    content, meta = content_tokens(response)
    if not content:
        # only function words and no form at all ("It is.", "Not at all") is a short answer
        tokens = _tokens(unicodedata.normalize("NFKC", response))
        return meta or not tokens
    text = unicodedata.normalize("NFKC", response).strip()
    return len(text) <= 60 and "\n" not in text and bool(_DANGLING.search(text)) and len(content) <= 2
