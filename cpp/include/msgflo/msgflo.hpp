// msgflo: MsgFlo participants in C++11, on the shared Rust core.
//
// The API keeps msgflo-cpp's shape (Definition, Message with ack/nack,
// Participant::send, Engine, EngineConfig, createEngine) without its json11
// dependency: payloads are bytes (std::string or pointer + length), and
// JSON is whatever text you put in them.
//
//   msgflo::Definition def;
//   def.component = "C++Repeat";
//   def.inports = {{"in", "any", ""}};
//   def.outports = {{"out", "any", ""}};
//   auto engine = msgflo::createEngine(msgflo::EngineConfig());
//   msgflo::Participant *p = engine->registerParticipant(def, [&](msgflo::Message *msg) {
//       p->send("out", msg->asString());
//       msg->ack();
//   });
//   engine->launch();   // blocks until engine->stop()
//
// Errors are msgflo::Error (a std::runtime_error) with code(), e.g.
// "UNKNOWN_PORT", "CONNECTION", "ALREADY_COMPLETED". A handler that throws
// nacks its message (and sends exactly {"error":"<what()>"} to an "error"
// outport if the definition has one); the participant keeps running.
//
// Threads: handlers of one participant run one at a time on a thread the
// Engine owns (launch() runs them for all participants). Participant::send
// may be called from any thread, concurrently.

#ifndef MSGFLO_MSGFLO_HPP
#define MSGFLO_MSGFLO_HPP

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace msgflo {

class Error : public std::runtime_error {
public:
    Error(const std::string &code, const std::string &message)
        : std::runtime_error(message), code_(code) {}
    // The core's error code, e.g. "UNKNOWN_PORT".
    const std::string &code() const { return code_; }

private:
    std::string code_;
};

struct Definition {
    struct Port {
        std::string id;
        std::string type;
        // Empty: ROLE.PORTID (upper-cased), as the original names queues.
        std::string queue;
    };
    // Empty: ROLE-<uuid>.
    std::string id;
    std::string role;
    std::string component;
    std::string label;
    // Empty: "file-word-o".
    std::string icon;
    std::vector<Port> inports;
    std::vector<Port> outports;
    // Beyond msgflo-cpp's Port {id, type, queue} (kept as it was, so its
    // aggregate initialisation works): ids of ports that are hidden (no
    // queue, not announced) or transient (non-persistent, auto-deleted).
    std::vector<std::string> hiddenPorts;
    std::vector<std::string> transientPorts;
};

class Message {
public:
    virtual ~Message() {}
    // The inport (port id) it arrived on.
    virtual std::string port() const = 0;
    // The payload bytes, exactly as received (JSON text, other text, binary).
    virtual std::string asString() const = 0;
    // Pointer to the payload bytes and their length, valid while the
    // Message lives.
    virtual void data(const char **data, uint64_t *length) const = 0;
    // Processed. Throws Error("ALREADY_COMPLETED") the second time.
    virtual void ack() = 0;
    // Failed: goes to the dead-letter route when the graph has one (AMQP;
    // without one the broker drops it), never back to the queue.
    virtual void nack() = 0;
    virtual bool settled() const = 0;
};

typedef std::function<void(Message *)> MessageHandler;

class Participant {
public:
    virtual ~Participant() {}
    // Publish on an outport. Throws Error("UNKNOWN_PORT") for a port the
    // definition does not have. Thread-safe.
    virtual void send(const std::string &port, const std::string &payload) = 0;
    virtual void send(const std::string &port, const char *data, uint64_t length) = 0;
    // Publish JSON text (e.g. from your JSON library), checked by the one
    // JSON rule of every msgflo language: sent as it is when it is valid
    // JSON; else (NaN, Infinity, not parsing) Error("INVALID_PAYLOAD") and
    // nothing is sent.
    virtual void sendJson(const std::string &port, const std::string &json) = 0;
    // Set (or replace) the handler; takes effect from the next message.
    virtual void onMessage(MessageHandler handler) = 0;
    // The definition as announced: role, id and queues filled in.
    virtual const Definition &definition() const = 0;
    // The discovery payload (JSON text).
    virtual std::string discovery() const = 0;
};

class EngineConfig {
public:
    // url() empty (the default): the core resolves MSGFLO_BROKER, then
    // CLOUDAMQP_URL, then amqp://localhost. prefetch() defaults to the
    // core's DEFAULT_PREFETCH; 0 is refused (INVALID_DEFINITION) when a
    // participant connects.
    EngineConfig();
    EngineConfig &url(const std::string &url);
    EngineConfig &prefetch(uint16_t prefetch);
    const std::string &url() const { return url_; }
    uint16_t prefetch() const { return prefetch_; }

private:
    std::string url_;
    uint16_t prefetch_;
};

class Engine {
public:
    virtual ~Engine() {}
    // Connect, declare the ports and subscribe now; announce in launch().
    // The Engine owns the returned Participant. Throws msgflo::Error.
    virtual Participant *registerParticipant(const Definition &definition) = 0;
    virtual Participant *registerParticipant(const Definition &definition, MessageHandler handler) = 0;
    // Announce every participant and run their handlers; blocks until
    // stop(). Throws msgflo::Error if announcing fails, or if serving
    // fails (code "INTERNAL": a bug caught in the core), after stopping
    // every participant.
    virtual void launch() = 0;
    // Make launch() return: the message being handled is finished,
    // unhandled ones go back to the queue, outputs are flushed.
    // Thread-safe; not async-signal-safe (call it from a normal thread).
    virtual void stop() = 0;
    // From now on, SIGTERM or SIGINT (Ctrl-C) makes launch() return as
    // stop() does, instead of killing the process. Listening starts here:
    // call it before printing a readiness line. Throws msgflo::Error.
    virtual void stopOnSignals() {}
    // The broker URL with the password hidden.
    virtual std::string broker() const = 0;
    // "ROLE(COMPONENT) ready on BROKER" for each registered participant,
    // one per line: what a participant process prints on stdout before it
    // announces itself (the same line in every language).
    virtual std::string readinessLine() const = 0;
};

std::shared_ptr<Engine> createEngine(const EngineConfig &config);

} // namespace msgflo

#endif // MSGFLO_MSGFLO_HPP
