// The clip page: the video played from the clip's start to its end, the word being spoken
// highlighted as LiveCC streams it, and the review buttons. Text from the data is only ever
// set with textContent, never parsed as HTML.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("clip-data").textContent);
  const token = document.querySelector('meta[name="curate-token"]').content;
  const video = document.getElementById("player");
  const spans = Array.from(document.querySelectorAll("#words .word"));
  const starts = data.words.map((w) => w.start_s);
  let current = -1;

  // The word spoken at time t: the last to start at or before t, while it lasts.
  function wordAt(t) {
    let lo = 0, hi = starts.length - 1, found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (starts[mid] <= t) { found = mid; lo = mid + 1; } else { hi = mid - 1; }
    }
    return found >= 0 && t < data.words[found].end_s ? found : -1;
  }

  function show(t) {
    const i = wordAt(t);
    spans.forEach((s, k) => s.classList.toggle("spoken", data.words[k].end_s <= t));
    if (i === current) return;
    if (current >= 0) spans[current].classList.remove("current");
    current = i;
    if (i >= 0) {
      spans[i].classList.add("current");
      spans[i].scrollIntoView({ block: "nearest" });
    }
  }

  if (video) {
    const start = data.start_s, end = data.end_s;
    const message = document.getElementById("video-message");
    const cannotPlay = () => {
      video.classList.add("hidden");
      message.classList.remove("hidden");
    };
    video.addEventListener("error", cannotPlay);
    if (video.error) cannotPlay();  // it failed before this script ran (a tiny broken file can)
    if (video.dataset.playable === "0" && !video.canPlayType("video/mpeg")) cannotPlay();
    video.addEventListener("loadedmetadata", () => { if (video.currentTime < start) video.currentTime = start; });
    const tick = () => {
      if (video.currentTime >= end && !video.paused) {  // the clip ends here, not the video
        video.pause();
        video.currentTime = end;
      }
      show(video.currentTime);
      if (!video.paused) requestAnimationFrame(tick);
    };
    video.addEventListener("play", () => {
      if (video.currentTime < start || video.currentTime >= end) video.currentTime = start;
      requestAnimationFrame(tick);
    });
    video.addEventListener("seeked", () => show(video.currentTime));
    video.addEventListener("timeupdate", () => show(video.currentTime));
    spans.forEach((s, k) => s.addEventListener("click", () => { video.currentTime = data.words[k].start_s; }));
  }

  const verdictEl = document.getElementById("verdict");
  const reasonEl = document.getElementById("reason");
  const errorEl = document.getElementById("review-error");
  const history = document.getElementById("history");

  async function review(verdict) {
    errorEl.classList.add("hidden");
    let resp, body;
    try {
      resp = await fetch("/api/review", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Curate-Token": token },
        body: JSON.stringify({ clip_id: data.clip_id, verdict: verdict, reason: reasonEl.value || null }),
      });
      body = await resp.json();
    } catch (e) {
      body = { error: "curate view did not answer (" + e + ")" };
    }
    if (!resp || !resp.ok) {
      errorEl.textContent = body.error || "the review was not saved";
      errorEl.classList.remove("hidden");
      return;
    }
    verdictEl.textContent = body.verdict;
    verdictEl.className = "verdict " + body.verdict;
    const li = document.createElement("li");
    const tag = document.createElement("span");
    tag.className = "verdict " + body.verdict;
    tag.textContent = body.verdict;
    const who = document.createElement("span");
    who.className = "unit";
    who.textContent = body.who + ", " + body.reviewed_at.slice(0, 16).replace("T", " ") + " UTC";
    li.append(tag, " " + (body.reason || "") + " ", who);
    history.prepend(li);
    reasonEl.value = "";
    document.body.dataset.reviewed = body.review_id;  // for scripts and tests: the row written
  }

  document.getElementById("keep").addEventListener("click", () => review("keep"));
  document.getElementById("reject").addEventListener("click", () => review("reject"));
  document.addEventListener("keydown", (e) => {
    if (e.target.closest("input, textarea") || e.ctrlKey || e.metaKey || e.altKey) {
      if (e.target === reasonEl && e.key === "Enter") review("reject");  // a reason is typed to reject
      return;
    }
    if (e.key === "k" || e.key === "K") review("keep");
    else if (e.key === "r" || e.key === "R") review("reject");
    else if (e.key === " " && video) { e.preventDefault(); video.paused ? video.play() : video.pause(); }
  });
})();
