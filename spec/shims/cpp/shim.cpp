// The conformance shim written with the C++ API: repeats in -> out;
// {"command":"nack"} nacks, {"command":"error"} throws (nack + error
// outport), {"command":"whoami"} answers {"pid": N}. Usage: shim ROLE.
#include <msgflo/msgflo.hpp>

#include <csignal>
#include <iostream>
#include <pthread.h>
#include <stdexcept>
#include <thread>
#include <unistd.h>

static bool isCommand(const std::string &payload, const std::string &name) {
    // Enough JSON for the shim's fixed commands, without a JSON library.
    std::string compact;
    for (char c : payload)
        if (c != ' ' && c != '\n' && c != '\t' && c != '\r') compact += c;
    return compact == "{\"command\":\"" + name + "\"}";
}

int main(int argc, char *argv[]) {
    if (argc < 2) {
        std::cerr << "usage: shim ROLE" << std::endl;
        return 2;
    }
    msgflo::Definition def;
    def.component = "SpecShim";
    def.role = argv[1];
    def.inports = {{"in", "any", ""}};
    def.outports = {{"out", "any", ""}, {"error", "object", ""}};
    try {
        auto engine = msgflo::createEngine(msgflo::EngineConfig());
        msgflo::Participant *p = nullptr;
        p = engine->registerParticipant(def, [&p](msgflo::Message *msg) {
            const std::string payload = msg->asString();
            if (isCommand(payload, "nack")) {
                msg->nack();
            } else if (isCommand(payload, "error")) {
                throw std::runtime_error("error requested");
            } else if (isCommand(payload, "unicode")) {
                p->sendJson("out", "{\"text\":\"\u00e6\u20ac\U0001D11E\"}");
                msg->ack();
            } else if (isCommand(payload, "nan")) {
                p->sendJson("out", "NaN"); // refused: throws, so nack + error body
                msg->ack();
            } else if (isCommand(payload, "whoami")) {
                p->send("out", "{\"pid\":" + std::to_string(getpid()) + "}");
                msg->ack();
            } else {
                p->send("out", payload);
                msg->ack();
            }
        });
        engine->stopOnSignals();
        std::cout << engine->readinessLine() << std::endl;
        engine->launch();
    } catch (const msgflo::Error &e) {
        std::cerr << "shim: " << e.code() << ": " << e.what() << std::endl;
        return 1;
    }
    return 0;
}
