// Interop: the reference client zca-js, unmodified, against the zalo-personal simulator.
//
// zca-js has no base-URL settings: it calls Zalo's hostnames (id.zalo.me, wpa.chat.zalo.me,
// jr.chat.zalo.me, then the hosts the login answer names). It does take two transport
// options, and both are pointed at loopback here:
//   - `polyfill`, the fetch it uses for every HTTP call: ours rewrites any *.zalo.me URL to
//     the simulator's base URL and leaves the request otherwise as zca-js built it
//     (headers, cookies, body);
//   - `agent`, the agent its websocket connects through: ours opens the TLS connection to
//     the simulator, whatever host the URL names.
// The simulator serves https/wss with a test certificate; run with NODE_EXTRA_CA_CERTS set
// to the test CA so Node verifies it.
//
// Environment:
//   ZCA_SIM_URL      the simulator, e.g. https://localhost:4443 (required)
//   ZCA_LOGIN        "cookie" (default) or "qr"
//   ZCA_COOKIES      JSON [{name, value, domain}] (cookie login)
//   ZCA_IMEI         the imei the cookies were issued with (cookie login)
//   ZCA_USER_AGENT   the user agent the cookies are bound to (both logins)
//   ZCA_EXPECT       how many inbound events (messages, recalls, friend and group events) to
//                    wait for (default 0)
//   ZCA_REQUEST_OLD  "1": then ask for the older direct and group messages (510/511)
//   ZCA_SEND_USER    a user id to send a text to after that (optional)
//   ZCA_SEND_GROUP   a group id to send a text to (optional)
//   ZCA_SEND_MEDIA   "1": also send an image, a file and a sticker to each of them; the
//                    bytes are media_bytes(length) below (the test knows the pattern)
//   ZCA_TIMEOUT_MS   give up after this long (default 60000)
//
// Output: one JSON object per line on stdout, each with an "event" field:
//   qr {code}                 a QR is waiting (QR login): scan and confirm it on the simulator
//   logged_in {uid}
//   ready                     the websocket gave its cipher key: inbound traffic can start
//   message {...} / undo {...}
//   friend_event {type, threadId, isSelf, data} / group_event {type, act, threadId, isSelf,
//                groupName, sourceId, memberIds, memberNames}
//   old_messages {thread, msgIds}
//   sent {thread, to, kind, msgId}
//   done                      then the process exits 0; on any failure: error {message}, exit 1

import https from "node:https";
import tls from "node:tls";
import { Zalo, ThreadType, LoginQRCallbackEventType, FriendEventType } from "zca-js";

const env = process.env;
const simUrl = new URL(required("ZCA_SIM_URL"));
const timeoutMs = Number(env.ZCA_TIMEOUT_MS || 60000);
const expected = Number(env.ZCA_EXPECT || 0);

function required(name) {
    const value = env[name];
    if (!value) fail(`${name} is not set`);
    return value;
}

function emit(event, fields = {}) {
    process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");
}

function fail(message) {
    emit("error", { message: String(message) });
    process.exit(1);
}

// Zalo's hosts all end in zalo.me. Any other host is refused, not let out: a request that
// escaped the simulator must fail the test.
function toSimulator(url) {
    const target = new URL(url);
    if (target.hostname !== "zalo.me" && !target.hostname.endsWith(".zalo.me")) {
        fail(`zca-js called a host outside zalo.me: ${target.origin}`);
    }
    target.protocol = simUrl.protocol;
    target.host = simUrl.host;
    return target;
}

async function polyfill(url, options = {}) {
    // zca-js passes `agent` for node-fetch style transports; Node's fetch has no use for it.
    const { agent: _agent, ...rest } = options;
    return fetch(toSimulator(url), rest);
}

// The websocket's agent: every connection goes to the simulator; TLS names the host the
// simulator's certificate is issued for.
class LoopbackAgent extends https.Agent {
    createConnection(options) {
        toSimulator(`https://${options.host}/`);
        return tls.connect({
            ...options,
            host: simUrl.hostname === "localhost" ? "127.0.0.1" : simUrl.hostname,
            port: Number(simUrl.port || 443),
            servername: simUrl.hostname,
        });
    }
}

// Deterministic bytes that differ from chunk to chunk: the test rebuilds them to compare.
function mediaBytes(length) {
    const bytes = Buffer.alloc(length);
    for (let i = 0; i < length; i++) bytes[i] = i % 251;
    return bytes;
}

// zca-js reads image sizes from `metadata` when given a buffer (no image decoder needed).
const IMAGE = { filename: "ao-size-m.jpg", length: 2500, width: 800, height: 600 };
const FILE = { filename: "hoa-don.pdf", length: 2200 };
const STICKER = { id: 46351, cateId: 0, type: 7 };

async function sendMedia(api, to, threadType, thread) {
    const image = await api.sendMessage(
        {
            msg: "Mẫu áo size M",
            attachments: [{
                data: mediaBytes(IMAGE.length),
                filename: IMAGE.filename,
                metadata: { totalSize: IMAGE.length, width: IMAGE.width, height: IMAGE.height },
            }],
        },
        to,
        threadType,
    );
    emit("sent", { thread, to, kind: "image", msgId: String(image.attachment[0]?.msgId) });
    const file = await api.sendMessage(
        {
            msg: "",
            attachments: [{
                data: mediaBytes(FILE.length),
                filename: FILE.filename,
                metadata: { totalSize: FILE.length },
            }],
        },
        to,
        threadType,
    );
    emit("sent", { thread, to, kind: "file", msgId: String(file.attachment[0]?.msgId) });
    const sticker = await api.sendSticker(STICKER, to, threadType);
    emit("sent", { thread, to, kind: "sticker", msgId: String(sticker.msgId) });
}

// Both histories (lastId null: everything the server keeps), reported once each.
async function requestOld(listener) {
    const answered = new Promise((resolve) => {
        const seen = new Set();
        listener.on("old_messages", (messages, threadType) => {
            const thread = threadType === ThreadType.Group ? "group" : "user";
            emit("old_messages", { thread, msgIds: messages.map((m) => String(m.data.msgId)) });
            seen.add(thread);
            if (seen.size === 2) resolve();
        });
    });
    listener.requestOldMessages(ThreadType.User);
    listener.requestOldMessages(ThreadType.Group);
    await answered;
}

function messageFields(message) {
    const data = message.data;
    return {
        threadType: message.type === ThreadType.Group ? "group" : "user",
        threadId: String(message.threadId),
        isSelf: message.isSelf,
        msgId: String(data.msgId),
        cliMsgId: String(data.cliMsgId),
        msgType: data.msgType,
        uidFrom: String(data.uidFrom),
        idTo: String(data.idTo),
        dName: data.dName,
        ts: String(data.ts),
        content: data.content,
    };
}

async function login(zalo) {
    if ((env.ZCA_LOGIN || "cookie") === "qr") {
        return zalo.loginQR({ userAgent: required("ZCA_USER_AGENT") }, (event) => {
            if (event.type === LoginQRCallbackEventType.QRCodeGenerated) {
                emit("qr", { code: event.data.code });
            } else if (event.type === LoginQRCallbackEventType.QRCodeExpired) {
                fail("the QR expired");
            } else if (event.type === LoginQRCallbackEventType.QRCodeDeclined) {
                fail("the QR was declined");
            }
        });
    }
    return zalo.login({
        cookie: JSON.parse(required("ZCA_COOKIES")),
        imei: required("ZCA_IMEI"),
        userAgent: required("ZCA_USER_AGENT"),
    });
}

async function main() {
    setTimeout(() => fail(`not done within ${timeoutMs} ms`), timeoutMs).unref();
    const zalo = new Zalo({
        polyfill,
        agent: new LoopbackAgent(),
        // No call to the npm registry, nothing but our JSON lines on stdout, and the
        // messages the owner typed on the phone delivered too.
        checkUpdate: false,
        logging: false,
        selfListen: true,
    });
    const api = await login(zalo);
    emit("logged_in", { uid: String(api.getOwnId()) });

    const listener = api.listener;
    let received = 0;
    let sending = false;
    const finish = async () => {
        if (sending) return;
        sending = true;
        try {
            if (env.ZCA_REQUEST_OLD === "1") await requestOld(listener);
            const media = env.ZCA_SEND_MEDIA === "1";
            if (env.ZCA_SEND_USER) {
                const to = env.ZCA_SEND_USER;
                const answer = await api.sendMessage("Chào anh, shop đã nhận đơn.", to, ThreadType.User);
                emit("sent", { thread: "user", to, kind: "text", msgId: String(answer.message?.msgId) });
                if (media) await sendMedia(api, to, ThreadType.User, "user");
            }
            if (env.ZCA_SEND_GROUP) {
                const to = env.ZCA_SEND_GROUP;
                const answer = await api.sendMessage("Chào cả nhóm!", to, ThreadType.Group);
                emit("sent", { thread: "group", to, kind: "text", msgId: String(answer.message?.msgId) });
                if (media) await sendMedia(api, to, ThreadType.Group, "group");
            }
            listener.stop();
            emit("done");
            process.exit(0);
        } catch (error) {
            fail(`sending failed: ${error?.message ?? error}`);
        }
    };
    const counted = () => {
        received += 1;
        if (received >= expected) finish();
    };
    listener.on("cipher_key", () => {
        emit("ready");
        if (expected === 0) finish();
    });
    listener.on("message", (message) => {
        emit("message", messageFields(message));
        counted();
    });
    listener.on("undo", (undo) => {
        emit("undo", {
            isGroup: undo.isGroup,
            threadId: String(undo.threadId),
            uidFrom: String(undo.data.uidFrom),
            msgId: String(undo.data.msgId),
            content: undo.data.content,
        });
        counted();
    });
    listener.on("friend_event", (event) => {
        emit("friend_event", {
            type: FriendEventType[event.type],
            threadId: String(event.threadId),
            isSelf: event.isSelf,
            data: event.data,
        });
        counted();
    });
    listener.on("group_event", (event) => {
        const data = event.data;
        emit("group_event", {
            type: event.type,
            act: event.act,
            threadId: String(event.threadId),
            isSelf: event.isSelf,
            groupName: data.groupName ?? null,
            sourceId: data.sourceId ?? null,
            memberIds: data.updateMembers ? data.updateMembers.map((m) => String(m.id)) : (data.uids ?? []),
            memberNames: data.updateMembers ? data.updateMembers.map((m) => m.dName) : [],
        });
        counted();
    });
    listener.on("error", (error) => fail(`websocket error: ${error?.message ?? error}`));
    listener.on("closed", (code) => {
        if (!sending) fail(`websocket closed with ${code}`);
    });
    listener.start();
}

main().catch((error) => fail(error?.stack ?? error));
